"""Skill-compositional world model on the Cosmos-Predict2 architecture (paper Sec. 3.3, 4.1, app. A).

``WorldModel`` wraps diffusers' ``CosmosTransformer3DModel`` + ``AutoencoderKLWan`` + the
flow-matching scheduler of ``Cosmos2VideoToWorldPipeline``; ``alignment`` maps latent frames to
control steps. See ``docs/worldmodel.md``.
"""
from world2act.worldmodel.alignment import (actions_per_latent_frame, clip_control_steps, latent_action_chunks,
                                            latent_action_ranges, latent_frame_of_step, num_latent_frames)
from world2act.worldmodel.configs import PRESETS, WorldModelConfig, get_config


def __getattr__(name):  # keep `import world2act.worldmodel.alignment` free of torch/diffusers
    if name == "WorldModel":
        from world2act.worldmodel.model import WorldModel

        return WorldModel
    raise AttributeError(name)


__all__ = ["WorldModel", "WorldModelConfig", "PRESETS", "get_config", "num_latent_frames",
           "actions_per_latent_frame", "latent_action_ranges", "latent_action_chunks", "clip_control_steps", "latent_frame_of_step"]
