"""What is declared: the contract (alias names, tag keys, slots), the stage and pipeline
declarations and their discovery, experiments, pinned inputs, deterministic training.
"""
