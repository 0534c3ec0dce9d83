"""Clients for the serving engines (Triton for cv, vLLM for llm): write, load, unload, infer."""
