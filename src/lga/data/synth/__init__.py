"""Waterbirds in miniature: procedurally drawn birds on land/water backgrounds.

The embedded offline dataset, written in the WILDS Waterbirds layout (``metadata.csv`` + PNG
images) with a ``dataset.yaml`` and per-image bird attributes in ``attributes.csv``.

It reproduces the phenomenon that makes Waterbirds hard: the background (land: forest, grass;
water: lake, ocean) fills most of the picture with large, low-frequency colour differences, so it
is the easy cue; the bird is small (about 25-45% of the image side) and its class shows in finer
details (feet, neck, legs, bill, plumage, pose) that vary within a class and overlap between
classes. In the training split the background matches the class with probability
``correlation``; validation and test are balanced over the four (class, place) groups.

Every image is drawn from its own generator ``np.random.default_rng([seed, img_id])``, so output
is byte-identical for a seed and images can be drawn in any order or in parallel.

Modules: ``species`` (classes, backgrounds, species and trait tables, attribute sampling),
``draw`` (backgrounds, the bird, ``render_example``; its public helpers ``render_scale``,
``bird_sprite``, ``finish`` and ``BACKGROUND_DRAWERS`` are shared with the toy pretraining corpus)
and ``write`` (``SynthConfig``, ``plan``, ``generate`` and the files it writes).
"""

from lga.data.attributes import ATTRIBUTE_COLUMNS, ATTRIBUTE_FILE
from lga.data.synth.draw import render_example
from lga.data.synth.species import (
    ATTRIBUTE_VALUES,
    BACKGROUNDS,
    CLASSES,
    PLACES,
    SPECIES,
    TRAITS,
    UNSEEN_PLACES,
    sample_attributes,
)
from lga.data.synth.write import (
    SYNTH_SPEC,
    SynthConfig,
    generate,
    plan,
    synth_spec,
)

__all__ = [
    "ATTRIBUTE_COLUMNS",
    "ATTRIBUTE_FILE",
    "ATTRIBUTE_VALUES",
    "BACKGROUNDS",
    "CLASSES",
    "PLACES",
    "SPECIES",
    "SYNTH_SPEC",
    "TRAITS",
    "UNSEEN_PLACES",
    "SynthConfig",
    "generate",
    "plan",
    "render_example",
    "sample_attributes",
    "synth_spec",
]
