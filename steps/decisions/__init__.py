"""How a version is judged: gates and their decision runs, the paired statistics of a
champion/challenger comparison, the load generators.
"""
