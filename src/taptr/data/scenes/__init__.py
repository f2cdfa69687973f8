"""The synthetic scene engine: photo-textured 2.5D scenes with exact point tracks and
visibility, rendered in PyTorch on CPU or GPU (docs/data.md).

Modules, in the order a clip is made:
  config       `SceneConfig`: what to generate (size, length, points, difficulty, effects)
  textures     `TextureLibrary`: photos and cut-outs, split into training and held-out files
  procedural   textures and shapes drawn from noise when no photos are given
  layout       one scene: background, layers, depth order, motions (`SceneLayout`)
  motion       camera homographies and layer transforms over time
  render       frames from a layout (`grid_sample` per layer, "over" compositing)
  points       ground-truth tracks and visibility of sampled points
  effects      motion blur, brightness/contrast drift, noise, compression
  generator    `SceneGenerator` (seed -> `TrackingSample`), `write_heldout_set`
  texture_fetch  `taptr textures fetch`: photo packages from Debian's archive
"""

from taptr.data.scenes.config import SceneConfig
from taptr.data.scenes.generator import SceneBatch, SceneGenerator, write_heldout_set
from taptr.data.scenes.textures import TextureLibrary

__all__ = ["SceneBatch", "SceneConfig", "SceneGenerator", "TextureLibrary", "write_heldout_set"]
