"""The few-shot loop on the built-in default does better than colour alone (issue #4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partseg.data.faces import colour_floor, render_face
from partseg.eval.metrics import ScoreAccumulator
from partseg.eval.oracle import to_input
from partseg.fewshot.invert import InversionConfig
from partseg.fewshot.learner import FewShotConfig, Shots, load_shots, train_head
from partseg.fewshot.segment import segment_by_inversion
from partseg.gan import load_generator
from partseg.gan.checkpoints import builtin_annotations
from partseg.labels import FACES

FLOOR_SEED = 7_000_000  # fit seeds FLOOR_SEED.., scored on the next N_EVAL: disjoint from every training range
N_FIT, N_EVAL = 300, 8


def test_two_shot_head_beats_the_colour_only_floor_on_rendered_faces():
    try:
        G = load_generator("builtin:faces64")
        shots = load_shots(builtin_annotations("faces64"))
    except FileNotFoundError as e:
        pytest.skip(f"built-in weights not in this install: {e}")
    two = Shots(shots.names[:2], shots.ws[:2], shots.seeds[:2], shots.noise_mode, shots.masks[:2], shots.labels)
    head = train_head(G, two, FewShotConfig(head="cnn", steps=200, seed=0), progress=False)
    seeds = range(FLOOR_SEED + N_FIT, FLOOR_SEED + N_FIT + N_EVAL)  # the faces the colour floor is scored on
    images, masks = zip(*(render_face(s, G.resolution) for s in seeds), strict=True)
    res = segment_by_inversion(G, head, to_input(np.stack(images)), InversionConfig(steps=60), batch=N_EVAL)
    acc = ScoreAccumulator(len(FACES))
    acc.add(res["labels"], torch.from_numpy(np.stack(masks)).long())
    head_miou = acc.scores().miou
    floor = colour_floor(n_fit=N_FIT, n_eval=N_EVAL, size=G.resolution, seed=FLOOR_SEED)["miou"]
    print(f"2-shot head through inversion: mIoU {head_miou:.3f}; colour-only floor {floor:.3f}")
    assert head_miou > floor + 0.03
