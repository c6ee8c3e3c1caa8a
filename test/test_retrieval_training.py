"""NetVLAD retrieval training: triplet loss, masks from poses, the tool end to end."""
import numpy as np
import pytest
import torch

from offline_tools import train_retrieval
from ros2_s2dhm.features.checkpoints import load_network
from ros2_s2dhm.training.retrieval import (GlobalHead, PlaceSet, RetrievalConfig, describe,
                                           initialise_centroids, train_netvlad, triplet_loss,
                                           triplet_masks)


def test_triplet_loss_zero_when_positive_closer_by_margin():
    q = torch.tensor([1.0, 0.0])
    pos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # best positive at distance 0
    far = torch.tensor([[-1.0, 0.0]])              # squared distance 4 > 0 + margin
    assert triplet_loss(q, pos, far, 0.1) == 0
    near = torch.tensor([[0.99, 0.141]])           # squared distance ~0.02 < margin
    assert triplet_loss(q, pos, near, 0.1) > 0


def test_masks_follow_camera_distances():
    refs = np.array([[0.0, 0, 0], [2.0, 0, 0], [20.0, 0, 0]])
    pos, neg = triplet_masks(np.array([[1.0, 0, 0]]), refs, 1.5, 10.0)
    assert pos.tolist() == [[True, True, False]] and neg.tolist() == [[False, False, True]]


def separable_places(n: int = 6):
    """(reference maps, query maps [n,512,3,4], centres [n,3]): n noisy views of n places 10 m
    apart."""
    g = torch.Generator().manual_seed(0)
    places = torch.randn(n, 512, 3, 4, generator=g)
    refs = places + 1.5 * torch.randn(places.shape, generator=g)
    queries = places + 1.5 * torch.randn(places.shape, generator=g)
    return refs, queries, np.array([[10.0 * i, 0, 0] for i in range(n)])


def test_training_lowers_the_loss_on_separable_places():
    refs, queries, centers = separable_places()
    from ros2_s2dhm.features.netvlad import NetVLAD

    torch.manual_seed(0)
    netvlad = NetVLAD(num_clusters=8)
    losses = train_netvlad(netvlad, [PlaceSet(refs, centers, queries, centers)],
                           RetrievalConfig(steps=60, lr=1e-2, margin=0.5, positive_radius_m=1.0,
                                           negative_radius_m=5.0, batch=2, hard_negatives=3,
                                           mining_every=10), progress=False)
    assert np.mean(losses[-15:]) < np.mean(losses[:15])


def test_conv5_3_trains_with_the_layer_at_its_own_rate():
    """With a conv5_3 in the head, the maps are its input; both layers learn, the loss falls."""
    refs, queries, centers = separable_places()
    from ros2_s2dhm.features.netvlad import NetVLAD

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(512, 512, 3, padding=1)
    head = GlobalHead(NetVLAD(num_clusters=8), conv)
    start = conv.weight.detach().clone()
    config = RetrievalConfig(steps=60, lr=1e-2, conv5_3_lr=1e-4, margin=0.5, positive_radius_m=1.0,
                             negative_radius_m=5.0, batch=2, hard_negatives=3, mining_every=10)
    assert [group["lr"] for group in head.parameter_groups(config)] == [1e-2, 1e-4]
    losses = train_netvlad(head, [PlaceSet(refs, centers, queries, centers)], config, progress=False)
    assert np.mean(losses[-15:]) < np.mean(losses[:15])
    assert not torch.equal(conv.weight, start)
    # describe reads the head's input maps, through the trained conv5_3
    np.testing.assert_allclose(describe(head, queries[:2]), describe(head.netvlad, conv(queries[:2])),
                               atol=1e-5)


def test_data_init_puts_centroids_on_the_features():
    from ros2_s2dhm.features.netvlad import NetVLAD

    g = torch.Generator().manual_seed(0)
    modes = torch.nn.functional.normalize(torch.randn(4, 512, generator=g), dim=1)
    # maps whose local descriptors are 4 tight clusters
    labels = torch.randint(0, 4, (3, 6, 8), generator=g)
    maps = (modes[labels] + 0.01 * torch.randn(3, 6, 8, 512, generator=g)).permute(0, 3, 1, 2)
    netvlad = NetVLAD(num_clusters=4)
    initialise_centroids(netvlad, [maps], seed=0)
    cos = netvlad.centroids.detach() @ modes.T
    assert torch.allclose(cos.max(0).values, torch.ones(4), atol=1e-2)  # every mode found
    assert torch.allclose(netvlad.conv.weight[:, :, 0, 0], 100 * netvlad.centroids)


def test_hard_negatives_are_the_closest_far_references():
    """A negative that looks like the query's place is what the loss sees first: training on a
    set with one look-alike negative moves it away from the query."""
    from ros2_s2dhm.features.netvlad import NetVLAD

    g = torch.Generator().manual_seed(1)
    places = torch.randn(8, 512, 3, 4, generator=g)
    places[7] = places[0] + 0.3 * torch.randn(512, 3, 4, generator=g)  # look-alike of place 0, far away
    centers = np.array([[10.0 * i, 0, 0] for i in range(8)])
    queries = places[:1] + 0.3 * torch.randn(1, 512, 3, 4, generator=g)
    torch.manual_seed(0)
    netvlad = NetVLAD(num_clusters=8)
    s = PlaceSet(places, centers, queries, centers[:1])
    before = describe(netvlad, torch.cat([queries, places[[0, 7]]]))
    train_netvlad(netvlad, [s], RetrievalConfig(steps=40, lr=1e-2, margin=0.5, positive_radius_m=1.0,
                                                negative_radius_m=5.0, batch=1, hard_negatives=1,
                                                mining_every=5, init_from_data=False), progress=False)
    after = describe(netvlad, torch.cat([queries, places[[0, 7]]]))
    gap = lambda d: float(((d[0] - d[2]) ** 2).sum() - ((d[0] - d[1]) ** 2).sum())  # noqa: E731
    assert gap(after) > gap(before)


def test_tool_trains_and_writes_loadable_weights(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "retrieval.pth"
    args = ["--dataset", str(tiny_synthetic.root), "--weights", "random", "--out", str(out),
            "--steps", "5", "--image-size", "128", "--positive-radius", "2.5",
            "--negative-radius", "6", "--device", "cpu", "--cache", str(tmp_path / "cache"),
            "--no-progress"]
    assert train_retrieval.main(args) == 0
    printed = capsys.readouterr().out
    conditions = {q.split("/")[0] for q in (tiny_synthetic.root / "images").iterdir()
                  for q in [q.name]} - {"overcast-reference"}
    rows = {line.split()[0] for line in printed.splitlines()[2:] if "->" in line and "%" in line}
    assert conditions | {"all"} <= rows  # a row per query condition and one over all
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1  # conv5_3 kept for the next run
    assert train_retrieval.main(args + ["--out", str(tmp_path / "again.pth")]) == 0
    net, info = load_network(out)
    random_net, _ = load_network(None)
    assert info.kind == "ros2_s2dhm" and not info.random
    assert not torch.equal(net.netvlad.centroids, random_net.netvlad.centroids)
    assert torch.equal(net.encoder[0].weight, random_net.encoder[0].weight)  # encoder frozen
    assert torch.equal(net.encoder[-1].weight, random_net.encoder[-1].weight)


def test_tool_trains_conv5_3_and_keeps_the_hypercolumn_layers(tiny_synthetic, tmp_path):
    out = tmp_path / "retrieval.pth"
    assert train_retrieval.main([
        "--dataset", str(tiny_synthetic.root), "--weights", "random", "--out", str(out),
        "--steps", "3", "--image-size", "128", "--positive-radius", "2.5", "--negative-radius", "6",
        "--device", "cpu", "--cache", str(tmp_path / "cache"), "--no-progress", "--train-conv5-3",
        "--conv5-3-lr", "1e-3"]) == 0
    net, _ = load_network(out)
    random_net, _ = load_network(None)
    assert not torch.equal(net.encoder[-1].weight, random_net.encoder[-1].weight)  # conv5_3 learnt
    for i in range(len(net.encoder) - 1):  # every layer the hypercolumn taps read stays
        for a, b in zip(net.encoder[i].parameters(), random_net.encoder[i].parameters()):
            assert torch.equal(a, b)


def _write_sequence(folder, images):
    import cv2

    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)


def test_tool_trains_on_image_sequences_and_scores_held_out_ones(tmp_path, capsys):
    """--sequence: two index-aligned folders without poses, frame i at i * spacing; the places
    scored by --validate-sequence are other folders; a misaligned pair is refused by name."""
    rng = np.random.default_rng(0)
    places = rng.integers(0, 256, (12, 64, 96, 3), dtype=np.uint8)
    noisy = lambda: np.clip(places + rng.normal(0, 20, places.shape), 0, 255).astype(np.uint8)  # noqa: E731
    _write_sequence(tmp_path / "train" / "day", noisy()[:8])
    _write_sequence(tmp_path / "train" / "night", noisy()[:8])
    _write_sequence(tmp_path / "held" / "day", noisy()[8:])
    _write_sequence(tmp_path / "held" / "night", noisy()[8:])
    out = tmp_path / "seq.pth"
    args = ["--sequence", str(tmp_path / "train" / "day"), str(tmp_path / "train" / "night"),
            "--validate-sequence", str(tmp_path / "held" / "day"), str(tmp_path / "held" / "night"),
            "--weights", "random", "--out", str(out), "--steps", "4", "--image-size", "96",
            "--positive-radius", "0.5", "--negative-radius", "1.5", "--frame-spacing", "1", "2",
            "--device", "cpu", "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert train_retrieval.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("held-out sets")
    rows = {line.split()[0] for line in printed.splitlines()[2:] if "->" in line and "%" in line}
    assert rows == {"night", "all"}  # the held-out folder's name is its condition
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    net, _ = load_network(out)
    random_net, _ = load_network(None)
    assert not torch.equal(net.netvlad.centroids, random_net.netvlad.centroids)
    s = train_retrieval.sequence_set(tmp_path / "train" / "day", tmp_path / "train" / "night", 2.5,
                                     random_net, _, 96, "cpu", tmp_path / "cache")
    assert s.reference_centers[:, 0].tolist() == [2.5 * i for i in range(8)]
    (tmp_path / "train" / "night" / "007.png").unlink()
    assert train_retrieval.main(args + ["--cache", str(tmp_path / "c2")]) == 2
    assert "index-aligned" in capsys.readouterr().err
    for refused in (["--out", str(out), "--weights", "random"],  # no training data
                    args[:3] + ["--frame-spacing", "1", "2", "--out", str(out)]):  # 2 spacings, 1 pair
        with pytest.raises(SystemExit):
            train_retrieval.main(refused)


def test_sets_of_different_map_sizes_train_together():
    """Places rendered at two image sizes (maps 3x4 and 2x5) mix in one step's passes."""
    from ros2_s2dhm.features.netvlad import NetVLAD

    refs, queries, centers = separable_places()
    g = torch.Generator().manual_seed(1)
    wide = torch.randn(6, 512, 2, 5, generator=g)
    sets = [PlaceSet(refs, centers, queries, centers),
            PlaceSet(wide + 0.5 * torch.randn(wide.shape, generator=g), centers,
                     wide + 0.5 * torch.randn(wide.shape, generator=g), centers)]
    torch.manual_seed(0)
    netvlad = NetVLAD(num_clusters=8)
    losses = train_netvlad(netvlad, sets, RetrievalConfig(
        steps=40, lr=1e-2, margin=0.5, positive_radius_m=1.0, negative_radius_m=5.0, batch=4,
        hard_negatives=3, mining_every=10), progress=False)
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
