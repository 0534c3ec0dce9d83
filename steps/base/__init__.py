"""The ground floor: errors and exit codes, the environment variables, where the services are,
secrets, MLflow's REST client, S3, a step's output files. Imports no other part.
"""
