"""The local stack (`mlcp stack`): the services a machine runs as the cluster would, and
MLflow's users.
"""
