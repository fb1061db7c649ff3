"""GraphMAE's plain-torch message passing and Planetoid loading against PyTorch Geometric, the reference
implementation on PyPI (``torch_geometric``, pure Python; in the ``test`` extra). DGL, the official code's backend,
does not install with current torch; its ``GATConv`` and PyG's compute the same function with the same parameters.

Skipped with the reason when torch_geometric is not installed."""

import shutil

import numpy as np
import pytest
import torch
from conftest import shared_data

import hf_mae
from hf_mae.modeling.graphmae import GATLayer, GINLayer
from hf_mae.processors.graph_processing import GraphProcessor, load_planetoid

pyg_nn = pytest.importorskip("torch_geometric.nn", reason="torch_geometric is not installed (pip install torch_geometric)")


def random_graph(num_nodes=60, num_edges=300, seed=0):
    """A random directed graph with self loops on every node (as the processor prepares graphs)."""
    generator = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, num_nodes, (2, num_edges), generator=generator)
    loops = torch.arange(num_nodes).expand(2, -1)
    return torch.cat([edges, loops], dim=1).unique(dim=1)


@pytest.mark.parametrize("in_dim,out_dim,heads", [(24, 8, 4), (8, 24, 1), (16, 16, 2)])  # both of GATLayer's paths
def test_gat_layer_equals_pyg_gatconv(in_dim, out_dim, heads):
    torch.manual_seed(0)
    ours = GATLayer(in_dim, out_dim, heads, negative_slope=0.2)
    for param in (ours.weight, ours.attn_l, ours.attn_r, ours.bias):
        torch.nn.init.normal_(param)
    reference = pyg_nn.GATConv(in_dim, out_dim, heads=heads, negative_slope=0.2, add_self_loops=False, bias=True)
    with torch.no_grad():
        reference.lin.weight.copy_(ours.weight)
        reference.att_src.copy_(ours.attn_l)  # a_l scores the source (neighbour), PyG's att_src
        reference.att_dst.copy_(ours.attn_r)
        reference.bias.copy_(ours.bias)
    x, edges = torch.randn(60, in_dim), random_graph()
    difference = (ours(x, edges) - reference(x, edges)).abs().max().item()
    print(f"GAT {in_dim}->{heads}x{out_dim}: max |ours - PyG| {difference:.2e}")
    assert difference < 1e-5


def test_gin_layer_equals_pyg_ginconv():
    """GIN with eps = 0 on a graph with self loops: x_i + sum over incoming edges (the loop counts x_i once more)."""
    torch.manual_seed(0)
    ours = GINLayer(12, 16, 8, activation="relu", norm=None)
    reference = pyg_nn.GINConv(ours.mlp, eps=0.0, train_eps=False)  # the same MLP module
    x, edges = torch.randn(60, 12), random_graph()
    torch.testing.assert_close(ours(x, edges), reference(x, edges), rtol=0, atol=1e-5)


def test_planetoid_loader_and_processor_equal_pyg(tmp_path):
    """Cora through load_planetoid + GraphProcessor equals torch_geometric.datasets.Planetoid(root, "Cora") with
    NormalizeFeatures and self loops: features, labels, the public split and the edge set."""
    from torch_geometric.datasets import Planetoid
    from torch_geometric.transforms import NormalizeFeatures
    from torch_geometric.utils import add_self_loops

    raw = tmp_path / "Cora" / "raw"
    raw.mkdir(parents=True)
    for path in shared_data("planetoid").joinpath("raw").glob("ind.cora.*"):
        shutil.copy(path, raw / path.name)
    data = Planetoid(str(tmp_path), "Cora", transform=NormalizeFeatures())[0]  # reads raw/, no download
    ours = GraphProcessor(feature_normalization="row")(load_planetoid(tmp_path))
    torch.testing.assert_close(ours["node_features"], data.x, rtol=0, atol=1e-7)
    assert torch.equal(ours["labels"], data.y)
    for split in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(ours[split], getattr(data, split)), split
    expected, _ = add_self_loops(data.edge_index, num_nodes=data.num_nodes)
    as_set = lambda edges: set(map(tuple, edges.T.tolist()))  # noqa: E731
    assert as_set(ours["edge_index"]) == as_set(expected) and ours["edge_index"].shape[1] == expected.shape[1] == 13264


def test_graphmae_encoder_equals_a_pyg_gat_stack():
    """The whole graphmae-cora encoder (2 GAT layers, 4 heads x 128, PReLU after both) equals the same stack of
    PyG GATConvs with the weights copied, in eval mode (no dropout)."""
    model = hf_mae.create_model("graphmae-cora", task="base", num_features=40).eval()
    x, edges = torch.rand(60, 40), random_graph()
    h = x
    for layer in model.encoder.layers:
        conv = pyg_nn.GATConv(layer.in_dim, layer.out_dim, heads=layer.num_heads, add_self_loops=False)
        with torch.no_grad():
            conv.lin.weight.copy_(layer.weight)
            conv.att_src.copy_(layer.attn_l)
            conv.att_dst.copy_(layer.attn_r)
            conv.bias.copy_(layer.bias)
        h = layer.activation(conv(h, edges))
    difference = (model(x, edges).last_hidden_state - h).abs().max().item()
    print(f"graphmae-cora encoder vs PyG GATConv stack: max difference {difference:.2e}")
    assert difference < 1e-5 and np.isfinite(difference)
