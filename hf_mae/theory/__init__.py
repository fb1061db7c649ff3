"""Small numerical reproductions of theory papers about masked modeling (no transformers classes).

- :mod:`hf_mae.theory.deep_linear`: JEPA vs MAE in deep linear networks (Littwin et al., NeurIPS 2024).
"""
