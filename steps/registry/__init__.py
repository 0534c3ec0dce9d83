"""What is live and why: aliases, their moves and records, promote and rollback, the promotion
policy, descriptions, audit, the serving check, the serving back-end protocol, the router's
traffic weights, history and lineage for people, traces.
"""
