"""HNF's graph branch: a batched k-NN vision graph with a virtual node, and a Chebyshev graph convolution."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import ChebConv
from transformers.activations import ACT2FN


@dataclass
class HNFVisionGraph:
    """A batch of vision graphs as one disjoint union.

    Graph `b` owns nodes `b * (N + 1) ... b * (N + 1) + N`: its N patches, then its virtual node.
    """

    edge_index: torch.Tensor  # (2, E): source, target over B * (N + 1) nodes
    neighbor_index: torch.Tensor  # (B, N, k): the k most cosine-similar other patches of each patch
    num_graphs: int
    num_patches: int

    @property
    def num_nodes(self) -> int:
        return self.num_graphs * (self.num_patches + 1)

    def virtual_node_ids(self) -> torch.Tensor:
        return torch.arange(self.num_graphs, device=self.edge_index.device) * (self.num_patches + 1) + self.num_patches


@torch.no_grad()
def build_vision_graph(patch_embeddings: torch.Tensor, num_neighbors: int) -> HNFVisionGraph:
    """k-NN graph by cosine similarity for every image of a batch, plus a virtual node per image.

    Each patch is joined to its `num_neighbors` most similar other patches (topk over a (B, N, N) similarity
    matrix); the relation is made symmetric by adding the reversed edges, so a pair of mutual neighbours is
    joined twice (weight 2). The virtual node is joined to every patch in both directions.
    """
    batch, num_patches, _ = patch_embeddings.shape
    device = patch_embeddings.device
    unit = F.normalize(patch_embeddings.float(), dim=-1)
    similarity = unit @ unit.transpose(1, 2)  # (B, N, N)
    similarity.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    neighbor_index = similarity.topk(num_neighbors, dim=-1).indices  # (B, N, k)

    graph_offsets = torch.arange(batch, device=device).view(batch, 1) * (num_patches + 1)
    patch_ids = torch.arange(num_patches, device=device).view(1, num_patches) + graph_offsets  # (B, N)
    neighbor_ids = (neighbor_index + graph_offsets.unsqueeze(-1)).flatten()
    center_ids = patch_ids.unsqueeze(-1).expand(-1, -1, num_neighbors).flatten()
    virtual_ids = (graph_offsets + num_patches).expand(-1, num_patches).flatten()
    patch_ids = patch_ids.flatten()
    sources = torch.cat([neighbor_ids, center_ids, virtual_ids, patch_ids])
    targets = torch.cat([center_ids, neighbor_ids, patch_ids, virtual_ids])
    return HNFVisionGraph(torch.stack([sources, targets]), neighbor_index, batch, num_patches)


class HNFChebConv(ChebConv):
    """torch_geometric's `ChebConv` (same weights, same Laplacian normalisation) that propagates with one sparse
    matrix product per Chebyshev order (`message_and_aggregate`) instead of a gathered message per edge: the
    same numbers, about 4x faster on CPU for a batch-sized disjoint-union graph."""

    def message_and_aggregate(self, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(adj_t, x)

    def forward(self, x, edge_index, edge_weight=None, batch=None, lambda_max=None):
        num_nodes = x.size(self.node_dim)
        edge_index, norm = self.__norm__(
            edge_index, num_nodes, edge_weight, self.normalization, lambda_max, dtype=x.dtype, batch=batch
        )
        # the scaled Laplacian, transposed (row = target), as PyG expects sparse adjacencies
        laplacian_t = torch.sparse_coo_tensor(
            edge_index.flip(0), norm, (num_nodes, num_nodes), check_invariants=False
        ).coalesce()
        previous, current = x, x
        out = self.lins[0](x)
        if len(self.lins) > 1:
            current = self.propagate(laplacian_t, x=x, norm=None)
            out = out + self.lins[1](current)
        for lin in self.lins[2:]:
            previous, current = current, 2.0 * self.propagate(laplacian_t, x=current, norm=None) - previous
            out = out + lin(current)
        return out + self.bias if self.bias is not None else out


class HNFGraphBlock(nn.Module):
    """Chebyshev graph convolution (`ChebConv`, symmetric normalisation) with a residual,
    over the patch nodes and the virtual node of every image of the batch at once."""

    def __init__(self, config, num_neighbors: int):
        super().__init__()
        self.num_neighbors = num_neighbors
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.conv = HNFChebConv(config.hidden_size, config.hidden_size, K=config.chebyshev_k, normalization="sym")
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, patch_embeddings: torch.Tensor, node_features: torch.Tensor) -> tuple[torch.Tensor, HNFVisionGraph]:
        """patch_embeddings (B, N, d) decide the edges; node_features (B, N + 1, d) are the N patches, then the virtual node."""
        graph = build_vision_graph(patch_embeddings, self.num_neighbors)
        hidden = self.norm(node_features).reshape(graph.num_nodes, -1)
        # For the symmetric normalisation the largest Laplacian eigenvalue is at most 2.
        hidden = self.conv(hidden, graph.edge_index, lambda_max=2.0)
        return node_features + self.dropout(self.act(hidden)).view_as(node_features), graph
