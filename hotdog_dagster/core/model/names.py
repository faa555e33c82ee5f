"""Model specs by name, importable without loading torch (definitions and the CLI need them fast)."""

#: The seed's real model: OpenCLIP ViT-B-32 trained on LAION-2B.
REAL_MODEL = "open_clip/ViT-B-32/laion2b_s34b_b79k"
#: The small model trained on the sketch world and shipped inside the package.
SKETCH_MODEL = "open_clip/hotdog-sketch/bundled"
#: An untrained model of the same architecture: for tests of plumbing and for timing.
RANDOM_SKETCH_MODEL = "open_clip/hotdog-sketch/random"
#: A Stable Diffusion pipeline of the real diffusers classes at toy sizes with random weights, built
#: in memory (no download): generation plumbing anywhere; its pictures are noise.
TINY_DIFFUSION_MODEL = "tiny-random"
