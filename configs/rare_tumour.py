"""The rare-tumour study (Rane 2026, done with sound splits): `jaxsynth run`.

Real data is split first (real-only test, then validation, then training); each enabled
generator trains on the training split only and makes synthetic tumour tiles; a memorisation
filter drops near-copies of training images; Rane 2026's CNN is trained for every arm
(original / original + each generator / synthetic-only tumours) × seeds and scored on the real
test split with 95 % CIs and paired tests against the original arm.

Variants:
* default: the built-in phantom at 32 px, DCGAN + cGAN + the DDPM U-Net, small nets (each
  model's `:study32` variant; run times in README.md).
  The test split is 10× Rane 2026's (100 tumour / 1,000 normal, same 1:10 prevalence) because
  a metric on 10 tumour images proves nothing.
* `:all`: the default plus WGAN-GP.
* Stable Diffusion: `--config.sd.model_path=DIR` adds the off-the-shelf `sd` arm; naming `sd_ft`
  in `generators` as well adds SD fine-tuned on the training tumour tiles (`gen.sd_ft`,
  docs/sd_finetune.md).
* `:rigorous`: the default with 3 generator seeds (`study.generator_seeds`), so the verdicts'
  intervals include the generator's training variance (about 3x the generator time).
* `:smoke`: tiny everything (tests).
* `:paper`: Rane 2026's settings — 128 px, 100 tumour / 1,000 normal (80/10/10 split), DCGAN
  for 3,000 epochs, 300 GAN + 100 SD images, 10 classifier epochs at batch 32 — for a GPU/TPU
  host with real PCam (`--config.data.source=pcam_h5:/path/to/pcam`).
"""

import ml_collections
from jaxsynth.configs import cgan, dcgan, ddpm, sd_finetune, wgan_gp

from jaxsynth.config import Variants, base_config
from jaxsynth.study.generators import study_generator

# The default trains the DCGAN (Rane 2026), the cGAN (Andrei & Ionescu) and the DDPM (Bohumel);
# `:all` adds WGAN-GP (Poonam et al.); `--config.generators=...` picks any subset.
GENERATORS = ("dcgan", "cgan", "ddpm")
ALL_GENERATORS = ("dcgan", "cgan", "wgan_gp", "ddpm")
VARIANTS = Variants(("smoke", "all", "paper", "rigorous"))
# configs/sd_finetune.py's variant for each generator preset (study32: its default, LoRA r4)
SD_FT_PRESETS = {"smoke": "smoke", "paper": "paper"}


def _split(train, val, test):
    s = ml_collections.ConfigDict()
    for name, (n_normal, n_tumour) in (("train", train), ("val", val), ("test", test)):
        s[name] = ml_collections.ConfigDict({"normal": n_normal, "tumour": n_tumour})
    return s


def generators(preset: str) -> ml_collections.ConfigDict:
    """`gen.<name>`: each generator's whole model config (its `preset` variant), minus the keys
    the study sets for every generator alike (seed, image size, data source and split)."""
    g = ml_collections.ConfigDict()
    g.dcgan = study_generator(dcgan.get_config(preset))
    g.cgan = study_generator(cgan.get_config(preset))
    g.wgan_gp = study_generator(wgan_gp.get_config(preset))
    g.ddpm = study_generator(ddpm.get_config(preset))
    # Stable Diffusion fine-tuned (LoRA by default) on the training split's tumour tiles; off
    # unless named in `generators`, and it needs `sd.model_path` (its base model, the `sd` arm's
    # too, so both arms appear side by side). `--config.gen.sd_ft.sd_ft.mode=full` for full.
    g.sd_ft = study_generator(sd_finetune.get_config(SD_FT_PRESETS.get(preset, "") + ",tumour"))
    del g.sd_ft.sd_ft["model_path"]  # the study's sd.model_path, one key for both SD arms
    return g


def get_config(arg=None):
    variant, _ = VARIANTS.parse(arg)
    c = base_config()
    c.seed = 0
    c.image_size = 32
    c.batch_size = 32  # unused at the top level: each generator and the classifier have their own
    c.num_steps = 0  # unused at the top level: each generator has its own
    c.checkpoint_every = 200  # generators checkpoint every min(this, their num_steps) steps

    c.data.source = "phantom"
    # source classes in label order; `NATIVE:name` renames (e.g. "NORM:normal" for NCT folders)
    c.data.classes = ("normal", "tumour")
    c.data.minority_class = "tumour"
    c.data.phantom = ml_collections.ConfigDict({"num_per_class": 2000})
    c.data.split = _split(train=(800, 80), val=(100, 10), test=(1000, 100))

    c.generators = GENERATORS
    # CPU-sized generators (`:study32` of each model config): the whole default study must
    # finish in minutes on a 2-core CPU; `:paper` has the papers' settings.
    c.gen = generators("study32")

    c.sd = ml_collections.ConfigDict()
    c.sd.model_path = ""  # a local diffusers SD folder (Flax or PyTorch weights); empty = SD off
    c.sd.prompt = "a high-resolution H&E stained histopathology patch of metastatic tumour tissue"
    c.sd.negative_prompt = ""
    c.sd.steps = 20
    c.sd.guidance = 7.5
    c.sd.size = 512
    c.sd.num = 100

    c.synthetic = ml_collections.ConfigDict()
    c.synthetic.num = 300  # synthetic tumour images per generator (paper 000: 300 GAN, 100 SD)
    c.synthetic.memorization_filter = True

    c.classifier = ml_collections.ConfigDict()
    c.classifier.model = "paper_cnn"
    c.classifier.epochs = 10
    c.classifier.batch_size = 32
    c.classifier.lr = 1e-3
    c.classifier.class_weights = True
    c.classifier.seeds = (0, 1, 2)
    c.classifier.synthetic_only_arms = True

    c.eval = ml_collections.ConfigDict()
    c.eval.bootstrap = 1000  # bootstrap resamples for CIs
    c.eval.inception_weights = ""  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth (local)
    c.eval.tsne = True
    # More feature spaces for FD/KID/PRDC of each synthetic set, next to the domain CNN's
    # (docs/feature_spaces.md): "ssl" (an encoder trained on the training split), "pixels",
    # "hf-vit:DIR", "timm-vit:DIR", "ssl:DIR", "inception:PATH". Each adds a cheap stage per
    # generator seed and never reruns a generator or a classifier.
    c.eval.extractors = ()
    c.eval.ssl_config = ""  # variant of configs/ssl_encoder.py for "ssl" ("" = its default)

    # ---- Verdicts that survive a rerun (issue 19; docs/verdicts.md) ----------------------------
    c.study = ml_collections.ConfigDict()
    # Each generator is trained once per seed (its seed = `seed` + this); intervals cover the
    # generator seeds only when there are >= 2. One on the CPU default for time; `:rigorous` 3.
    c.study.generator_seeds = (0,)
    c.study.controls = ("classical", "oversample")  # control arms next to every generator arm
    c.study.classical = ml_collections.ConfigDict(
        {
            "hed_sigma": 0.05,  # HED stain scale ~ U(1 - s, 1 + s) (Tellez et al.)
            "hed_bias": 0.01,  # HED stain shift ~ U(-b, b)
            "brightness": 0.05,  # added, as a fraction of 255
            "contrast": 0.1,  # factor ~ U(1 - c, 1 + c) around the tile mean
            "blur_prob": 0.3,
            "blur_sigma": 1.0,  # Gaussian sigma ~ U(0.1, this) px
        }
    )
    c.study.selective = True  # `<gen>_selective`: HistoGAN's confidence + centroid filter
    c.study.selective_confidence_quantile = 0.1  # of P(tumour) over real val tumour tiles
    c.study.selective_distance_quantile = 0.9  # of val tumour tiles' distance to the centroid
    c.study.verdict_metric = "pr_auc"  # the metric of each arm's one-line verdict
    c.study.threshold_bootstrap = 200  # val resamples for the threshold-stability check
    # K-fold cross-validation (Poonam et al.; docs/cross_validation.md): 0 = the single split;
    # K >= 2 runs the whole study once per fold (K x the cost) on the pool of the split counts
    # and reports per-fold and pooled verdicts.
    c.study.cv_folds = 0
    # ---------------------------------------------------------------------------------------

    if variant == "smoke":
        c.image_size = 16
        c.data.phantom.num_per_class = 300
        c.data.split = _split(train=(120, 24), val=(30, 8), test=(60, 20))
        c.generators = ("dcgan", "ddpm")
        c.gen = generators("smoke")
        c.gen.wgan_gp.num_steps = 4
        c.synthetic.num = 24
        c.classifier.epochs = 2
        c.classifier.batch_size = 16
        c.classifier.seeds = (0, 1)
        c.eval.bootstrap = 100
        c.eval.tsne = False
        c.eval.ssl_config = "smoke"
        c.study.generator_seeds = (0, 1)
        c.study.threshold_bootstrap = 50
    elif variant == "rigorous":
        c.study.generator_seeds = (0, 1, 2)
    elif variant == "paper":
        c.image_size = 128
        c.data.split = _split(train=(800, 80), val=(100, 10), test=(100, 10))
        c.generators = ("dcgan",)
        c.gen = generators("paper")
        c.synthetic.num = 300
        c.sd.num = 100
        c.classifier.seeds = (0, 1, 2, 3, 4)
        c.eval.bootstrap = 2000
    elif variant == "all":
        c.generators = ALL_GENERATORS
    return c
