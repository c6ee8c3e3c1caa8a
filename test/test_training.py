"""Backbone fine-tuning: losses, negative mining, resumable training and the command line."""
import csv
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ros2_s2dhm.datasets.correspondences import write_correspondences_mat
from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.features.checkpoints import load_network, weights_hash
from ros2_s2dhm.training.data import (CorrespondencePairDataset, find_correspondence_files,
                                      parse_condition_pairs, resolve_image_path)
from ros2_s2dhm.training.losses import dmc_loss, gauss_newton_loss, sample_features
from ros2_s2dhm.training.mining import mine_negatives, mining_pool_size, sample_positive_indices
from ros2_s2dhm.training.trainer import TrainConfig, train


# ----------------------------------------------------------------------------- losses

def test_dmc_zero_inside_margins_positive_outside():
    inside = dmc_loss(torch.tensor([0.0, 0.05, 0.1]), torch.tensor([1.0, 1.3, 2.0]))
    assert float(inside.loss) == 0.0
    pos = dmc_loss(torch.tensor([0.3, 0.1]), torch.tensor([1.5]))
    assert float(pos.positive) == pytest.approx((0.2 ** 2) / 2)
    assert float(pos.negative) == 0.0
    neg = dmc_loss(torch.tensor([0.0]), torch.tensor([0.5, 1.2]))
    assert float(neg.negative) == pytest.approx((0.5 ** 2) / 2)
    assert float(neg.loss) > 0


def test_mining_schedule():
    assert mining_pool_size(0) == 300
    assert mining_pool_size(1) == 300
    assert mining_pool_size(10000) == 165  # 300 exp(-0.6) = 164.6
    assert mining_pool_size(50000) == 15   # 300 exp(-3) = 14.9
    assert mining_pool_size(10 ** 6) == 5
    sizes = [mining_pool_size(k) for k in range(0, 100000, 5000)]
    assert sizes == sorted(sizes, reverse=True)


def test_negatives_respect_distance_constraint_and_pool():
    generator = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(8, 10, 12, generator=generator), dim=0)
    targets = torch.tensor([[3.0, 4.0], [10.2, 8.7], [0.0, 0.0]])
    anchors = sample_features(features, targets)  # identical to the true matches: distance 0
    cells, kept = mine_negatives(anchors, features, targets, alpha=2.0, pool_size=1, generator=generator)
    assert kept.tolist() == [0, 1, 2]
    assert ((cells - targets).norm(dim=1) > 2.0).all()
    # pool of 1 = the nearest allowed cell in descriptor space
    flat = features.reshape(8, -1).T
    ys, xs = torch.meshgrid(torch.arange(10), torch.arange(12), indexing="ij")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).float()
    for row in range(3):
        distance = (flat - anchors[row]).norm(dim=1)
        distance[(grid - targets[row]).norm(dim=1) <= 2.0] = float("inf")
        assert grid[distance.argmin()].tolist() == cells[row].tolist()
    # a larger pool draws among several candidates
    draws = {tuple(mine_negatives(anchors[:1], features, targets[:1], 2.0, 20, generator)[0][0].tolist())
             for _ in range(30)}
    assert len(draws) > 3
    assert len(sample_positive_indices(5, 1024, generator)) == 5
    assert len(set(sample_positive_indices(100, 30, generator).tolist())) == 30


def test_gauss_newton_gradients_match_finite_differences():
    generator = torch.Generator().manual_seed(1)
    features_b = torch.randn(3, 6, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    desc_a = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[2.3, 2.6], [3.5, 1.2], [4.1, 3.9], [1.7, 4.2]], dtype=torch.float64)
    start = target + torch.tensor([[0.4, -0.3], [-0.6, 0.2], [0.1, 0.7], [-0.2, -0.5]], dtype=torch.float64)

    def loss(desc, feats):
        return gauss_newton_loss(desc, feats, target, start).loss

    assert torch.autograd.gradcheck(loss, (desc_a, features_b), eps=1e-6, atol=1e-6)


def test_gauss_newton_step_lands_on_match_for_linear_features():
    """F(x, y) = A (x, y) + c is exact under bilinear sampling and central differences:
    one GN step from anywhere reaches the true match, so e1 = 0."""
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(9.0), indexing="ij")
    matrix = torch.tensor([[1.0, 0.2], [-0.3, 0.8], [0.5, 0.5]], dtype=torch.float64)
    features = (matrix[:, 0, None, None] * xs + matrix[:, 1, None, None] * ys).double() + 0.1
    target = torch.tensor([[3.3, 4.6], [5.0, 2.0]], dtype=torch.float64)
    desc = sample_features(features, target)
    terms = gauss_newton_loss(desc, features, target, target + torch.tensor([[0.7, -0.8], [-0.9, 0.4]]).double())
    assert float(terms.e1) < 1e-10
    hessian = matrix.T @ matrix
    expected_e2 = math.log(2 * math.pi) - 0.5 * math.log(float(torch.det(hessian)))
    assert float(terms.e2) == pytest.approx(expected_e2, rel=1e-5)


# ----------------------------------------------------------------------------- data + training

def _write_pair(root, shift=(6, 4), size=(80, 64), count=200, seed=0):
    """A random texture, a shifted copy and their exact correspondences (RobotCar layout)."""
    rng = np.random.default_rng(seed)
    width, height = size
    big = cv2.resize(rng.integers(0, 255, (height // 4 + 4, width // 4 + 4, 3), dtype=np.uint8),
                     (width + 16, height + 16), interpolation=cv2.INTER_CUBIC)
    image_i = big[8:8 + height, 8:8 + width]
    image_j = big[8 + shift[1]:8 + shift[1] + height, 8 + shift[0]:8 + shift[0] + width]
    images = root / "images"
    for name, image in (("overcast-reference/rear/1.png", image_i), ("night/rear/2.png", image_j)):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    pt_i = np.stack([rng.uniform(shift[0], width - 1, count), rng.uniform(shift[1], height - 1, count)], 1)
    pt_j = pt_i - np.asarray(shift, dtype=np.float64)
    write_correspondences_mat(root / "corr" / "pair.mat", "/elsewhere/data/overcast-reference/rear/1.png",
                              "night/rear/2.png", pt_i, pt_j, np.zeros(count))
    return images


def test_dataset_resolves_paths_filters_conditions(tmp_path):
    images = _write_pair(tmp_path)
    path, name = resolve_image_path("/elsewhere/data/overcast-reference/rear/1.png", images)
    assert name == "overcast-reference/rear/1.png" and path.is_file()
    files = find_correspondence_files([tmp_path / "corr"])
    dataset = CorrespondencePairDataset(files, images, image_size=40,
                                        condition_pairs=parse_condition_pairs(["night:overcast-reference"]))
    sample = dataset[0]
    assert sample.image_i.shape == (3, 32, 40)  # 80x64 -> longer side 40
    assert sample.pt_i.shape[1] == 2 and len(sample.pt_i) == 200
    np.testing.assert_allclose(sample.pt_i - sample.pt_j, np.full((200, 2), [3.0, 2.0]), atol=1e-4)
    with pytest.raises(DatasetError, match="condition"):
        CorrespondencePairDataset(files, images, 40, parse_condition_pairs(["dawn:*"]))
    with pytest.raises(DatasetError, match="not found"):
        resolve_image_path("night/rear/missing.png", images)


def _tiny_config(steps):
    return TrainConfig(steps=steps, image_size=64, lr=1e-4, num_positives=64, num_negatives=64,
                       negative_alpha_px=8.0, checkpoint_every=2, keep_checkpoints=1, seed=3)


def _losses(path):
    with open(path, newline="") as handle:
        return [(int(r["step"]), float(r["loss"]), float(r["gn"]), int(r["pool_size"]))
                for r in csv.DictReader(handle)]


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    images = _write_pair(tmp_path)
    dataset = CorrespondencePairDataset(find_correspondence_files([tmp_path / "corr"]), images, 64)

    network, _ = load_network(None, "cpu", seed=0)
    full = train(network, dataset, _tiny_config(4), tmp_path / "full", progress=False)
    first, _ = load_network(None, "cpu", seed=0)
    train(first, dataset, _tiny_config(2), tmp_path / "split", progress=False)
    resumed_net, _ = load_network(None, "cpu", seed=0)
    resumed = train(resumed_net, dataset, _tiny_config(4), tmp_path / "split",
                    resume=tmp_path / "split" / "last.pth", progress=False)

    assert [r["step"] for r in resumed.history] == [3, 4]
    np.testing.assert_allclose([r["loss"] for r in resumed.history], [r["loss"] for r in full.history[2:]],
                               rtol=1e-6)
    np.testing.assert_allclose(_losses(tmp_path / "split" / "losses.csv"), _losses(tmp_path / "full" / "losses.csv"),
                               rtol=1e-6)
    assert all(np.isfinite(r["loss"]) and r["num_neg"] > 0 and r["num_gn"] > 0 for r in full.history)
    assert len({r["loss"] for r in full.history}) > 1  # the weights change between steps
    # the output is the project's own weights format, equal for both runs
    loaded_full, info = load_network(full.weights, "cpu")
    loaded_resumed, _ = load_network(resumed.weights, "cpu")
    assert info.kind == "ros2_s2dhm" and info.meta["training"]["steps"] == 4
    assert weights_hash(loaded_full) == weights_hash(loaded_resumed)
    assert (tmp_path / "full" / "loss_curves.png").stat().st_size > 0
    assert [p.name for p in (tmp_path / "full" / "checkpoints").iterdir()] == ["step_00000004.pth"]


def test_command_line_one_step(tmp_path):
    from offline_tools.finetune import main

    images = _write_pair(tmp_path)
    out = tmp_path / "run"
    argv = ["--correspondences", str(tmp_path / "corr"), "--images-root", str(images), "--out", str(out),
            "--weights", "random", "--device", "cpu", "--steps", "1", "--image-size", "64",
            "--num-positives", "32", "--num-negatives", "32", "--taps", "0", "1", "--no-progress",
            "--half", "--condition-pairs", "overcast-reference:night"]
    assert main(argv) == 0
    rows = _losses(out / "losses.csv")
    assert len(rows) == 1 and rows[0][3] == 300
    _, info = load_network(out / "weights.pth", "cpu")
    assert info.meta["training"]["taps"] == [0, 1] and info.meta["dtype"] == "float16"
    assert main(argv[:-2] + ["--condition-pairs", "dawn:night"]) == 2
