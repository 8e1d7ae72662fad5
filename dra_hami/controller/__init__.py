"""The allocation controller of policy mode: gated pods' claims placed by policy, then the gate lifted.

Pure core (view.py, core.py, leader.py) and I/O at the edges (api.py, reconciler.py, runtime.py).
"""
