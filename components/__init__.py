"""Kubeflow components of the Celo pipeline: one file per stage.

Each component is an interface: a typed signature, a docstring and one call
into the installed package (:func:`celo.cli.run_stage`). The logic lives in
``celo``; the images are named in :mod:`components.images`.
"""
