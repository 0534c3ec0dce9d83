"""Hera wiring of the WorkflowTemplates and CronWorkflows: imports hera and the standard
library only.

Each stage template runs one ``mlcp`` step in the step image; the step code lives in
``steps/``. ``specs`` defines the steps and pipelines, ``common`` builds them, ``settings``
holds the build-time settings, and each template has its own short module.
"""
