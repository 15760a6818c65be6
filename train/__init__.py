"""digitspot training side (workstation only): data, teacher, distilled student, pruning, INT8, export.

May import torch. Imports the model card schema from ``digitspot.edge`` so both sides agree on it.
"""
