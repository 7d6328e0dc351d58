"""Stage 1 of World2Act: a shared video–action latent space (paper Sec. 4.1, Eq. 1, Tables S3, S6).

Public API (plain PyTorch; no simulator or diffusers import)::

    from world2act.align import (ActionAdapter, VideoAdapter, ActionDecoder, AlignConfig,
                                 chunkwise_similarity, bidirectional_infonce, AlignmentBundle)
"""
from world2act.align.bundle import AdapterConfig, AlignmentBundle
from world2act.align.data import AlignData, split_by_demo, synthetic_dataset
from world2act.align.losses import (
    LOSS_VARIANTS,
    bidirectional_infonce,
    chunkwise_similarity,
    contrastive_loss,
    global_infonce,
    global_similarity,
    infonce_from_similarity,
    infonce_loss,
    marginal_from_similarity,
    marginal_loss,
    reconstruction_loss,
    single_infonce,
    stage1_loss,
)
from world2act.align.metrics import evaluate_bundle, retrieval_metrics
from world2act.align.modules import ActionAdapter, ActionDecoder, ActionNormalizer, VideoAdapter
from world2act.align.negatives import NegativeBatch, NegativeSampler
from world2act.align.train import AlignConfig, train_adapters

__all__ = [
    "ActionAdapter", "VideoAdapter", "ActionDecoder", "ActionNormalizer", "AlignConfig", "AdapterConfig",
    "AlignmentBundle", "AlignData", "split_by_demo", "synthetic_dataset", "LOSS_VARIANTS",
    "chunkwise_similarity", "global_similarity", "bidirectional_infonce", "single_infonce", "global_infonce",
    "marginal_loss", "infonce_from_similarity", "infonce_loss", "marginal_from_similarity", "contrastive_loss",
    "reconstruction_loss", "stage1_loss", "retrieval_metrics", "evaluate_bundle", "NegativeSampler",
    "NegativeBatch", "train_adapters",
]
