"""Datasets: the Episode schema, LeRobot v3 read/write, videos, multi-view stitching, stats.

Public API::

    from world2act.data import (Episode, DatasetSpec, LeRobotDatasetWriter, LeRobotDataset,
                                stitch_views, unstitch_views, write_video, read_video,
                                compute_stats)

Heavy imports (pyarrow, av) happen inside functions, so importing this package is cheap.
"""
from world2act.data.layout import stitch_views, unstitch_views
from world2act.data.lerobot import DatasetSpec, LeRobotDataset, LeRobotDatasetWriter, image_key
from world2act.data.schema import Episode
from world2act.data.stats import compute_stats
from world2act.data.video import read_video, write_video

__all__ = [
    "DatasetSpec",
    "Episode",
    "LeRobotDataset",
    "LeRobotDatasetWriter",
    "compute_stats",
    "image_key",
    "read_video",
    "stitch_views",
    "unstitch_views",
    "write_video",
]
