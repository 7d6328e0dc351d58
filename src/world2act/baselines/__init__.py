"""Baselines the paper compares World2Act with (Tables 1-2, Fig. 5b).

* :mod:`world2act.baselines.idm`: an inverse dynamics model (two frames → the action chunk
  between them), trained on demonstrations.
* :mod:`world2act.baselines.dreamgen`: DreamGen (Jang et al. 2025): IDM pseudo-labels for the
  world model's imagined videos, then the base policy fine-tuned on real + pseudo-labelled data
  (``world2act dreamgen``).
"""
