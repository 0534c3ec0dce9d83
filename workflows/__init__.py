"""Hera wiring of the WorkflowTemplates: imports hera and the standard library only.

Each template runs one ``mlcp`` step in the step image; the step code lives in ``steps/``.
"""
