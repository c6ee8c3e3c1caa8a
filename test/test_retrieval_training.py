"""NetVLAD retrieval training: triplet loss, masks from poses, the tool end to end."""
import numpy as np
import torch

from offline_tools import train_retrieval
from ros2_s2dhm.features.checkpoints import load_network
from ros2_s2dhm.training.retrieval import (PlaceSet, RetrievalConfig, train_netvlad, triplet_loss,
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


def test_training_lowers_the_loss_on_separable_places():
    g = torch.Generator().manual_seed(0)
    places = [torch.randn(512, 3, 4, generator=g) for _ in range(6)]
    refs = [p + 1.5 * torch.randn(p.shape, generator=g) for p in places]
    queries = [p + 1.5 * torch.randn(p.shape, generator=g) for p in places]
    centers = np.array([[10.0 * i, 0, 0] for i in range(6)])
    from ros2_s2dhm.features.netvlad import NetVLAD

    torch.manual_seed(0)
    netvlad = NetVLAD(num_clusters=8)
    losses = train_netvlad(netvlad, [PlaceSet(refs, centers, queries, centers)],
                           RetrievalConfig(steps=60, lr=1e-2, margin=0.5, positive_radius_m=1.0,
                                           negative_radius_m=5.0), progress=False)
    assert np.mean(losses[-15:]) < np.mean(losses[:15])


def test_tool_trains_and_writes_loadable_weights(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "retrieval.pth"
    rc = train_retrieval.main(["--dataset", str(tiny_synthetic.root), "--weights", "random",
                               "--out", str(out), "--steps", "5", "--image-size", "128",
                               "--positive-radius", "2.5", "--negative-radius", "6", "--device", "cpu"])
    assert rc == 0
    assert "top-1 retrieval recall" in capsys.readouterr().out
    net, info = load_network(out)
    random_net, _ = load_network(None)
    assert info.kind == "ros2_s2dhm" and not info.random
    assert not torch.equal(net.netvlad.centroids, random_net.netvlad.centroids)
    assert torch.equal(net.encoder[0].weight, random_net.encoder[0].weight)  # encoder frozen
