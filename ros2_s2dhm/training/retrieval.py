"""Retrieval training from known camera poses: the NetVLAD layer on the frozen encoder.

The global descriptor is ``NetVLAD(conv5_3)``. By default only the NetVLAD layer is trained:
conv5_3 is computed once per image (:func:`conv5_features`), so a CPU step costs milliseconds,
and the encoder (hypercolumns, the map's descriptors, Feature-metric PnP) is unchanged. With
``train_conv5_3`` the last encoder layer is trained with it: its input, relu5_2, is what is
computed once. The hypercolumn taps stop before conv5_3 (``backbone.HYPERCOLUMN_LAYERS``), so
matching and Feature-metric PnP still do not change; only the global descriptor does.

Each query image (any condition) has positives, the references whose camera centre lies
within ``positive_radius_m``, and negatives, those farther than ``negative_radius_m``. The loss
is NetVLAD's weakly supervised triplet ranking loss with hard negatives: the best positive must
be closer than each of the query's ``hard_negatives`` closest negatives by ``margin`` in squared
descriptor distance. Closest is judged on descriptors of every reference refreshed every
``mining_every`` steps (NetVLAD's cached hard-negative mining).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.vq import kmeans2
from tqdm import tqdm

from ..features.preprocess import prepare_image
from ..options import option


@dataclass
class RetrievalConfig:
    """Hyperparameters of NetVLAD training (NetVLAD's margin 0.1, Adam); ``train_retrieval``'s
    flags come from these declarations. Radii are in the sets' unit (metres)."""

    steps: int = option(3000, "optimizer steps", low=1)
    lr: float = option(1e-3, "Adam learning rate", low=1e-12)
    batch: int = option(4, "queries per step", low=1)
    margin: float = option(0.1, "triplet ranking margin", low=0.0)
    positive_radius_m: float = option(3.0, "a reference this close to the query is a positive "
                                           "(the sets' unit)", name="positive_radius", low=0.0)
    negative_radius_m: float = option(10.0, "a reference farther than this is a negative",
                                      name="negative_radius", low=0.0)
    hard_negatives: int = option(10, "hardest negatives kept per query", low=1)
    mining_every: int = option(100, "steps between refreshes of the hard-negative cache", low=1)
    image_size: int = option(512, "longer image side fed to the network (the localizer's)",
                             low=32)
    init_from_data: bool = option(True, "initialise the centroids by k-means of the training "
                                        "conv5_3 (off: keep the current ones)")
    seed: int = option(0, "seed of sampling and k-means", low=0)
    train_conv5_3: bool = option(False, "also train conv5_3, the layer NetVLAD reads (the "
                                        "hypercolumn taps stop before it); relu5_2 is cached")
    conv5_3_lr: float = option(1e-5, "Adam learning rate of conv5_3 (with train_conv5_3)",
                               name="conv5_3_lr", low=1e-12)

    def validate(self) -> None:
        if self.negative_radius_m < self.positive_radius_m:
            raise ValueError(f"negative_radius {self.negative_radius_m} is smaller than "
                             f"positive_radius {self.positive_radius_m}")


@dataclass
class PlaceSet:
    """One traversal set: conv5_3 maps of its references [R,512,h,w] and queries [Q,512,h,w]
    (relu5_2 maps when conv5_3 is trained; any float dtype, usually float16), camera centres
    [R,3] / [Q,3] and query conditions [Q]."""

    reference_features: torch.Tensor
    reference_centers: np.ndarray
    query_features: torch.Tensor
    query_centers: np.ndarray
    query_conditions: np.ndarray | None = None

    def __post_init__(self):
        if self.query_conditions is None:
            self.query_conditions = np.array(["query"] * len(self.query_features))


class GlobalHead(torch.nn.Module):
    """What is trained: NetVLAD, after conv5_3 when that is trained too. [B,512,h,w] maps
    (conv5_3, or relu5_2 with conv5_3) -> descriptors [B, K*512] float32."""

    def __init__(self, netvlad, conv5_3: torch.nn.Module | None = None):
        super().__init__()
        self.netvlad, self.conv5_3 = netvlad, conv5_3

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        maps = maps.float()
        return self.netvlad(maps if self.conv5_3 is None else self.conv5_3(maps))

    @classmethod
    def of(cls, module) -> "GlobalHead":
        """``module`` itself when it is a head, else the head of that NetVLAD layer alone."""
        return module if isinstance(module, cls) else cls(module)

    def parameter_groups(self, config: RetrievalConfig) -> list[dict]:
        groups = [{"params": list(self.netvlad.parameters()), "lr": config.lr}]
        if self.conv5_3 is not None:
            groups.append({"params": list(self.conv5_3.parameters()), "lr": config.conv5_3_lr})
        return groups


def global_head(network, config: RetrievalConfig) -> GlobalHead:
    """The network's NetVLAD layer, with its conv5_3 when ``config.train_conv5_3`` (shared
    modules: training the head trains the network's)."""
    return GlobalHead(network.netvlad, network.encoder[-1] if config.train_conv5_3 else None)


@torch.no_grad()
def conv5_features(network, images, image_size: int, device, before_conv5_3: bool = False
                   ) -> torch.Tensor:
    """conv5_3 maps [N,512,h,w] float16 (CPU) of same-size RGB images (HxWx3 uint8), as the
    network's forward feeds them to NetVLAD; ``before_conv5_3``: its input, relu5_2."""
    layers = network.encoder[:-1] if before_conv5_3 else network.encoder
    out = []
    for image in images:
        tensor, _ = prepare_image(image, image_size, device)
        out.append(layers(tensor)[0].half().cpu())
    shapes = sorted({tuple(f.shape) for f in out})
    if len(shapes) > 1:
        raise ValueError(f"images of one set give conv5_3 maps of shapes {shapes}: train on sets "
                         "whose images share one size (split a set by camera)")
    return torch.stack(out) if out else torch.zeros(0, 512, 1, 1, dtype=torch.float16)


def triplet_masks(query_centers: np.ndarray, reference_centers: np.ndarray, positive_radius_m: float,
                  negative_radius_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(positives, negatives): bool [Q,R] by camera-centre distance."""
    d = np.linalg.norm(query_centers[:, None] - reference_centers[None], axis=2)
    return d <= positive_radius_m, d > negative_radius_m


def triplet_loss(query: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                 margin: float) -> torch.Tensor:
    """query [D], positives [P,D], negatives [N,D] -> mean over negatives of
    max(0, min_p |q-p|^2 + margin - |q-n|^2)."""
    best = (positives - query).square().sum(1).min()
    return F.relu(best + margin - (negatives - query).square().sum(1)).mean()


@torch.no_grad()
def initialise_centroids(netvlad, features: list[torch.Tensor], seed: int,
                         samples: int = 20_000) -> None:
    """NetVLAD's data initialisation: the centroids are k-means centres (scipy, k-means++) of up
    to ``samples`` L2-normalised local descriptors drawn from conv5_3 maps [B,512,h,w]."""
    x = torch.cat([F.normalize(f.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, f.shape[1])
                   for f in features])
    g = torch.Generator().manual_seed(seed)
    x = x[torch.randperm(len(x), generator=g)[:samples]].numpy().astype(np.float64)
    centroids, _ = kmeans2(x, netvlad.num_clusters, minit="++", seed=seed)
    netvlad.set_centroids(F.normalize(torch.from_numpy(centroids).float(), dim=1)
                          .to(netvlad.centroids.device))


def _training_items(sets: list[PlaceSet], config: RetrievalConfig) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(set, query, positives, negatives) of every query with at least one of each."""
    items = []
    for i, s in enumerate(sets):
        pos, neg = triplet_masks(s.query_centers, s.reference_centers, config.positive_radius_m,
                                 config.negative_radius_m)
        items += [(i, q, np.flatnonzero(pos[q]), np.flatnonzero(neg[q])) for q in range(len(pos))
                  if pos[q].any() and neg[q].any()]
    if not items:
        raise ValueError("no query has both a positive and a negative reference: check the radii "
                         f"({config.positive_radius_m}, {config.negative_radius_m}) against the sets' "
                         "camera spacing")
    return items


def train_netvlad(netvlad, sets: list[PlaceSet], config: RetrievalConfig,
                  progress: bool = True) -> list[float]:
    """Train ``netvlad`` (a NetVLAD layer or a :class:`GlobalHead`) in place on the place sets'
    maps; returns every step's loss."""
    head = GlobalHead.of(netvlad)
    rng = np.random.default_rng(config.seed)
    if config.init_from_data:
        initialise_centroids(head.netvlad, [_conv5_3(head, s.reference_features) for s in sets],
                             config.seed)
    items = _training_items(sets, config)
    optimizer = torch.optim.Adam(head.parameter_groups(config))
    device = head.netvlad.centroids.device
    losses = []
    cache = None
    for step in tqdm(range(config.steps), desc="NetVLAD", disable=not progress):
        if step % config.mining_every == 0:
            cache = [describe(head, s.reference_features) for s in sets]
            head.train()
        picks = [items[j] for j in rng.integers(len(items), size=config.batch)]
        # each query passes once, with its gradient; its hard negatives are chosen on that
        # descriptor against the cached reference descriptors
        queries = _through(head, [sets[i].query_features[q:q + 1] for i, q, _, _ in picks], device)
        maps, spans = [], []
        for (i, q, pos, neg), query in zip(picks, queries.detach().cpu()):
            distance = (torch.from_numpy(cache[i][neg]) - query).square().sum(1)
            hard = neg[distance.topk(min(config.hard_negatives, len(neg)), largest=False).indices.numpy()]
            spans.append((len(pos), len(hard)))
            maps += [sets[i].reference_features[pos], sets[i].reference_features[hard]]
        others = _through(head, maps, device)  # [positives, negatives] per pick
        loss, start = 0.0, 0
        for query, (num_pos, num_neg) in zip(queries, spans):
            mine = others[start:start + num_pos + num_neg]
            loss = loss + triplet_loss(query, mine[:num_pos], mine[num_pos:], config.margin)
            start += num_pos + num_neg
        loss = loss / config.batch
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    head.eval()
    return losses


def _through(head: GlobalHead, maps: list[torch.Tensor], device) -> torch.Tensor:
    """The head's descriptors [sum N_i, D] of map stacks [N_i,512,h_i,w_i], in order, with one
    pass per map size (sets of different image sizes mix in a step)."""
    by_shape: dict[tuple, list[int]] = {}
    for j, m in enumerate(maps):
        by_shape.setdefault(tuple(m.shape[1:]), []).append(j)
    parts: list = [None] * len(maps)
    for members in by_shape.values():
        out = head(torch.cat([maps[j] for j in members]).to(device))
        for j, chunk in zip(members, out.split([len(maps[j]) for j in members])):
            parts[j] = chunk
    return torch.cat(parts)


def _in_batches(fn, features: torch.Tensor, device, batch: int = 32) -> torch.Tensor:
    """fn over maps [N,...] ``batch`` at a time on ``device``; results concatenated on the CPU."""
    return torch.cat([fn(features[i:i + batch].to(device)).cpu()
                      for i in range(0, len(features), batch)])


@torch.no_grad()
def _conv5_3(head: GlobalHead, features: torch.Tensor) -> torch.Tensor:
    """The maps NetVLAD reads [N,512,h,w] (float16, CPU) of a head's input maps."""
    if head.conv5_3 is None:
        return features
    return _in_batches(lambda x: head.conv5_3(x.float()).half(), features,
                       head.netvlad.centroids.device)


@torch.no_grad()
def describe(netvlad, features: torch.Tensor) -> np.ndarray:
    """Global descriptors [N, K*512] float32 of maps [N,512,h,w]: conv5_3 for a NetVLAD layer,
    the head's input for a :class:`GlobalHead`."""
    head = GlobalHead.of(netvlad)
    head.eval()
    return _in_batches(head, features, head.netvlad.centroids.device).numpy()
