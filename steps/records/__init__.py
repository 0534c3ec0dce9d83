"""What MLflow records of a run: tracking, provenance, data lineage and the versioned data
sets, prompts.
"""
