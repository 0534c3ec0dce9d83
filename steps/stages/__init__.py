"""The stages every pipeline shares and what runs them: the stage skeleton, the chain, drift
and retrain, reproduce, the perf-test, the workflow's exit record, the gradual rollout.
"""
