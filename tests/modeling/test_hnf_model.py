"""HNF's architecture: real micrographs through forward and backward, the vision graph, the bidirectional ODE,
the gate, leakage, the text cache, the ablation switches, and learning a small procedural 10-class problem."""

import math

import pytest
import torch
import torch.nn.functional as F

from emvision.modeling import HNFConfig, HNFForImageClassification, HNFModel
from emvision.vocabulary import SEM_CATEGORIES
from emvision.modeling.hnf_graph import HNFGraphBlock, build_vision_graph
from emvision.modeling.modeling_hnf import HNFLayer, HNFTransformerBlock
from emvision.processing.image_processing_micrograph import MicrographImageProcessor
from tiny_models import HAND_WRITTEN_DESCRIPTIONS, tiny_hnf_config


@pytest.fixture(scope="module")
def real_pixels(real_sem_images):
    processor = MicrographImageProcessor(size={"height": 32, "width": 32})
    return processor(images=[str(path) for path in real_sem_images], return_tensors="pt")["pixel_values"]


@pytest.fixture(scope="module")
def real_labels(real_sem_images):
    return torch.tensor([SEM_CATEGORIES.index(path.parent.name) for path in real_sem_images])


def test_forward_backward_on_real_micrographs(real_pixels, real_labels):
    torch.manual_seed(0)
    model = HNFForImageClassification(tiny_hnf_config())
    graphs = []
    for layer in model.hnf.image_encoder.layers:
        layer.graph_branch.register_forward_hook(lambda module, inputs, output: graphs.append(output[1]))
    output = model(pixel_values=real_pixels, labels=real_labels)

    assert output.logits.shape == (18, 10)
    assert torch.isfinite(output.loss) and output.label_conditioned is False
    output.loss.backward()
    for index, layer in enumerate(model.hnf.image_encoder.layers):
        dynamics = layer.sequence_branch.dynamics
        for field in (dynamics.forward_field, dynamics.backward_field):
            grads = [p.grad for p in field.parameters()]
            assert all(g is not None for g in grads), f"layer {index}: an ODE field parameter got no gradient"
            assert sum(g.abs().sum() for g in grads) > 0, f"layer {index}: an ODE field got zero gradient"
        assert layer.graph_branch.conv.lins[1].weight.grad.abs().sum() > 0
        weights = output.gate_weights[index]
        assert weights.shape == (18, 2)
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(18))
        assert (weights > 0).all()
    assert model.hnf.text_encoder.projection.weight.grad.abs().sum() > 0  # the text side trains too

    # the graphs the layers built: configured k per layer, a virtual node per image
    for graph, layer, k in zip(graphs, model.hnf.image_encoder.layers, model.config.num_neighbors):
        assert graph.num_graphs == 18 and graph.num_patches == layer.patch_embedding.num_patches
        assert graph.neighbor_index.shape == (18, graph.num_patches, k)


def test_vision_graph_knn_degree_and_virtual_node():
    torch.manual_seed(0)
    batch, num_patches, k = 3, 12, 4
    features = torch.randn(batch, num_patches, 8)
    graph = build_vision_graph(features, k)
    source, target = graph.edge_index

    unit = F.normalize(features, dim=-1)
    similarity = unit @ unit.transpose(1, 2) - 10 * torch.eye(num_patches)
    expected = similarity.topk(k, dim=-1).indices
    assert torch.equal(graph.neighbor_index.sort(-1).values, expected.sort(-1).values)

    stride = num_patches + 1
    assert torch.equal(source // stride, target // stride), "an edge joins two different images"
    assert not (source == target).any()
    virtual = graph.virtual_node_ids()
    is_virtual_source, is_virtual_target = torch.isin(source, virtual), torch.isin(target, virtual)
    assert not (is_virtual_source & is_virtual_target).any()
    # the virtual node of each image is joined to each of its patches once, in both directions
    for b in range(batch):
        v = b * stride + num_patches
        assert sorted(target[source == v].tolist()) == list(range(b * stride, b * stride + num_patches))
        assert sorted(source[target == v].tolist()) == list(range(b * stride, b * stride + num_patches))
    # kNN edges: each patch receives exactly k edges from its k neighbours, plus the reverse edges
    knn = ~(is_virtual_source | is_virtual_target)
    assert knn.sum() == 2 * batch * num_patches * k
    directed = set(zip(source[knn].tolist(), target[knn].tolist()))
    for b in range(batch):
        for i in range(num_patches):
            for j in graph.neighbor_index[b, i].tolist():
                assert (b * stride + j, b * stride + i) in directed and (b * stride + i, b * stride + j) in directed
    # the undirected degree of a patch: its k neighbours, the patches that chose it, the virtual node
    degree = torch.bincount(target, minlength=graph.num_nodes)
    chosen_by = torch.bincount((graph.neighbor_index + torch.arange(batch).view(-1, 1, 1) * stride).flatten(), minlength=graph.num_nodes)
    patches = ~torch.isin(torch.arange(graph.num_nodes), virtual)
    assert torch.equal(degree[patches], (k + chosen_by + 1)[patches])
    assert (degree[virtual] == num_patches).all()


def test_graph_block_mixes_only_within_an_image():
    torch.manual_seed(0)
    block = HNFGraphBlock(tiny_hnf_config(), num_neighbors=3)
    content = torch.randn(2, 9, 32)
    nodes = torch.randn(2, 10, 32, requires_grad=True)
    out, _ = block(content, nodes)
    out[0, -1].sum().backward()  # image 0's virtual node
    assert nodes.grad[0].abs().sum() > 0 and nodes.grad[1].abs().sum() == 0
    assert (nodes.grad[0].abs().sum(-1) > 0).all()  # K=3 reaches every patch through the virtual node


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dense_chebyshev_convolutions_equal_torch_geometric_chebconv(order):
    from torch_geometric.nn import ChebConv

    from emvision.modeling.hnf_graph import HNFChebConv

    torch.manual_seed(0)
    graph = build_vision_graph(torch.randn(3, 16, 8), 5)
    reference = ChebConv(8, 8, K=order, normalization="sym")
    fast = HNFChebConv(8, 8, K=order, normalization="sym")
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(graph.num_nodes, 8, requires_grad=True)
    # the dense batched path the graph block uses: one scaled Laplacian per image, same numbers and gradients
    for lambda_max in (2.0, 1.5):
        expected = reference(x, graph.edge_index, lambda_max=lambda_max)
        dense = fast.forward_dense(x.view(3, 17, 8), graph.scaled_laplacian(lambda_max=lambda_max)).reshape(-1, 8)
        torch.testing.assert_close(dense, expected)
        torch.testing.assert_close(torch.autograd.grad(dense.square().sum(), x)[0], torch.autograd.grad(expected.square().sum(), x)[0])
    # one node's output alone (what the graph block computes when only the virtual node is read)
    laplacian = graph.scaled_laplacian()
    for node in (-1, 0, 7):
        full = fast.forward_dense(x.view(3, 17, 8), laplacian)[:, node]
        alone = fast.forward_dense_node(x.view(3, 17, 8), laplacian, node)
        torch.testing.assert_close(alone, full)
        torch.testing.assert_close(torch.autograd.grad(alone.square().sum(), x)[0], torch.autograd.grad(full.square().sum(), x)[0])


def test_the_encoder_without_patch_states_gives_the_same_embedding_and_gradients():
    torch.manual_seed(0)
    # float64: both ways sum the same terms in a different order, and some gradients are tiny beside others
    model = HNFForImageClassification(tiny_hnf_config(use_text_branch=False)).double().eval()
    encoder = model.hnf.image_encoder
    size = encoder.layers[0].patch_embedding.image_size
    pixels = torch.randn(4, 3, size, size, dtype=torch.float64)
    results = []
    for keep in (True, False):
        model.zero_grad()
        embedding, gates, _, patch_states = encoder(pixels, return_patch_states=keep)
        assert (patch_states is None) == (not keep)
        embedding.square().sum().backward()
        results.append((embedding.detach(), torch.stack([g.detach() for g in gates]),
                        {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}))
    (full, full_gates, full_grads), (alone, alone_gates, alone_grads) = results
    torch.testing.assert_close(alone, full)
    torch.testing.assert_close(alone_gates, full_gates)
    assert full_grads.keys() == alone_grads.keys() and any("graph_branch.conv" in name for name in full_grads)
    for name in full_grads:
        torch.testing.assert_close(alone_grads[name], full_grads[name], msg=name)


@pytest.mark.parametrize("method,adjoint", [("rk4", False), ("dopri5", True)])
def test_ode_solvers_train_both_vector_fields(method, adjoint):
    torch.manual_seed(0)
    config = tiny_hnf_config(ode_method=method, ode_adjoint=adjoint, ode_rtol=1e-2, ode_atol=1e-3, use_text_branch=False)
    model = HNFForImageClassification(config)
    ode = model.hnf.image_encoder.layers[0].sequence_branch
    ode.dynamics.num_evaluations = 0
    loss = model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1])).loss
    if method == "rk4":
        assert ode.dynamics.num_evaluations == 4 * config.ode_steps
    loss.backward()
    for field in (ode.dynamics.forward_field, ode.dynamics.backward_field):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (field.attention.qkv.weight, field.mlp.fc2.weight))


def test_ode_directions_match_separate_solves():
    """The joint solve equals integrating each field on its own: forward to +T, backward to -T."""
    from torchdiffeq import odeint

    torch.manual_seed(0)
    ode = HNFLayer(tiny_hnf_config(ode_method="dopri5", ode_rtol=1e-7, ode_atol=1e-7), 1).sequence_branch
    tokens = torch.randn(2, 17, 32)
    with torch.no_grad():
        forward_end, backward_end = ode.solve(tokens)
        kw = dict(method="dopri5", rtol=1e-7, atol=1e-7)
        expected_forward = odeint(ode.dynamics.forward_field, tokens, torch.tensor([0.0, 1.0]), **kw)[-1]
        expected_backward = odeint(ode.dynamics.backward_field, tokens, torch.tensor([0.0, -1.0]), **kw)[-1]
    torch.testing.assert_close(forward_end, expected_forward, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(backward_end, expected_backward, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(forward_end, backward_end, atol=1e-3)


@pytest.mark.parametrize("patch_embedding", ["linear", "conv_stem"])
def test_activation_checkpointing_gives_the_same_gradients(patch_embedding):
    torch.manual_seed(0)
    model = HNFForImageClassification(tiny_hnf_config(use_text_branch=False, patch_embedding=patch_embedding))
    pixels, labels = torch.randn(3, 3, 32, 32), torch.tensor([1, 2, 3])
    model(pixel_values=pixels, labels=labels).loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.hnf.image_encoder.layers)
    model(pixel_values=pixels, labels=labels).loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], msg=name)


@pytest.mark.parametrize("fusion", ["cross_attention", "concat"])
def test_default_predictions_ignore_labels(fusion):
    torch.manual_seed(0)
    model = HNFForImageClassification(tiny_hnf_config(fusion=fusion)).eval()
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(pixel_values=pixels).logits
        for labels in (torch.zeros(4, dtype=torch.long), torch.tensor([9, 3, 1, 7]), torch.tensor([5, 5, 2, 0])):
            output = model(pixel_values=pixels, labels=labels)
            assert torch.equal(output.logits, reference)
            assert output.label_conditioned is False


def test_paper_protocol_is_label_conditioned_and_marked():
    torch.manual_seed(0)
    model = HNFForImageClassification(tiny_hnf_config(text_conditioning="paper_label_conditioned")).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="paper_label_conditioned"):
        model(pixel_values=pixels)
    with torch.no_grad():
        first = model(pixel_values=pixels, labels=torch.tensor([0, 0]))
        second = model(pixel_values=pixels, labels=torch.tensor([7, 4]))
    assert first.label_conditioned is True and second.label_conditioned is True
    assert not torch.allclose(first.logits, second.logits)  # the labels reach the prediction: leakage, by design


def test_text_embeddings_cached_in_eval_and_refreshed_after_changes():
    torch.manual_seed(0)
    model = HNFForImageClassification(tiny_hnf_config())
    encoder = model.hnf.text_encoder
    calls = []
    encoder.language_model.register_forward_hook(lambda *args: calls.append(1))
    pixels = torch.randn(2, 3, 32, 32)

    model.eval()
    with torch.no_grad():
        first = model(pixel_values=pixels).logits
        model(pixel_values=pixels)
    assert len(calls) == 1
    with torch.no_grad():
        encoder.projection.weight.mul_(2.0)  # a weight changed in place: the cache must not be reused
        changed = model(pixel_values=pixels).logits
    assert len(calls) == 2 and not torch.allclose(first, changed)
    with torch.inference_mode():  # e.g. a pipeline call
        model(pixel_values=pixels)
    saliency_pixels = pixels.clone().requires_grad_()
    model(pixel_values=saliency_pixels).logits[:, 0].sum().backward()  # the cached text must not be an inference tensor
    assert saliency_pixels.grad.abs().sum() > 0 and len(calls) == 4
    model.train()
    model(pixel_values=pixels)
    model(pixel_values=pixels)
    assert len(calls) == 6  # training re-encodes every step (the text encoder is fine-tuned)


def test_description_buffers_hold_every_class():
    model = HNFForImageClassification(tiny_hnf_config())
    encoder = model.hnf.text_encoder
    assert encoder.description_labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 7, 8, 9]  # two for Porous_Sponge
    assert (encoder.description_attention_mask.sum(1) > 10).all()
    buffer_names = {name for name, _ in model.named_buffers()}
    assert "hnf.text_encoder.description_input_ids" in buffer_names and "hnf.text_encoder.description_input_ids" in model.state_dict()

    new = {name: [f"{texts[0]} Updated."] * len(texts) for name, texts in HAND_WRITTEN_DESCRIPTIONS.items()}
    before = encoder.description_input_ids.clone()
    model.set_class_descriptions(new, source="human")
    assert not torch.equal(before, encoder.description_input_ids)
    assert model.config.class_descriptions["Tips"] == new["Tips"]
    with pytest.raises(ValueError, match="no description for"):
        model.set_class_descriptions({name: texts for name, texts in new.items() if name != "Tips"})
    assert model.config.class_descriptions["Tips"] == new["Tips"]  # a rejected update leaves the model as it was


def test_class_names_stand_in_when_no_descriptions():
    model = HNFModel(tiny_hnf_config(class_descriptions=None, class_descriptions_source=None))
    assert model.text_encoder.description_labels.tolist() == list(range(10))
    assert model.config.descriptions_per_class()["Films_Coated_Surface"] == ["films coated surface"]


@pytest.mark.parametrize(
    "changes",
    [{"image_encoder": "vit"}, {"use_text_branch": False}, {"fusion": "concat"}, {"multi_scale": False}],
    ids=["without-hnf", "without-text", "concat-fusion", "single-scale"],
)
def test_ablation_switches(changes):
    torch.manual_seed(0)
    model = HNFForImageClassification(tiny_hnf_config(**changes))
    output = model(pixel_values=torch.randn(3, 3, 32, 32), labels=torch.tensor([1, 2, 3]))
    output.loss.backward()
    assert output.logits.shape == (3, 10)
    layers = [m for m in model.modules() if isinstance(m, HNFLayer)]
    if changes.get("image_encoder") == "vit":
        assert not layers and output.gate_weights is None
        assert sum(isinstance(m, HNFTransformerBlock) for m in model.modules()) == 3
    else:
        assert len(layers) == 3
    if changes.get("use_text_branch") is False:
        assert model.hnf.text_encoder is None and output.text_embeds is None
    if changes.get("fusion") == "concat":
        assert model.hnf.fusion is None and model.classifier.in_features == 64
    if changes.get("multi_scale") is False:
        assert [layer.patch_embedding.num_patches for layer in layers] == [64, 64, 64]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"patch_sizes": [5, 8, 16]}, "does not divide"),
        ({"num_neighbors": [6, 4, 4]}, "need 1 <= k < 4"),
        ({"num_neighbors": [6, 4]}, "2 entries for 3 layers"),
        ({"fusion": "sum"}, "fusion='sum'"),
        ({"class_descriptions": {"Unobtainium": ["?"], **HAND_WRITTEN_DESCRIPTIONS}}, "unknown classes"),
    ],
)
def test_config_rejects_bad_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_hnf_config(**changes)


def test_missing_text_model_folder_is_named():
    with pytest.raises(ValueError, match="/nonexistent/text-encoder"):
        HNFConfig(text_model_name_or_path="/nonexistent/text-encoder")  # its config is read
    with pytest.raises(ValueError, match="/nonexistent/text-encoder"):
        HNFModel(tiny_hnf_config(text_model_name_or_path="/nonexistent/text-encoder"))  # its tokenizer and weights


def test_bad_pixel_shape_is_explained():
    model = HNFForImageClassification(tiny_hnf_config(use_text_branch=False))
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, 32, 32\)"):
        model(pixel_values=torch.randn(1, 3, 48, 48))


def procedural_images(num_per_class: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SYNTHETIC: ten procedural texture classes (stripes at four angles, checkerboard, blob, ring, dots,
    two gradients), with random phase, frequency, contrast and noise, as pixels in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images, labels = [], []
    for label in range(10):
        for _ in range(num_per_class):
            u = lambda low, high: low + (high - low) * torch.rand((), generator=generator)  # noqa: E731
            frequency, phase = u(5, 8), u(0, 2 * math.pi)
            cx, cy = u(-0.3, 0.3), u(-0.3, 0.3)
            radius = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2)
            if label < 4:
                angle = label * math.pi / 4
                pattern = torch.sin(frequency * (x * math.cos(angle) + y * math.sin(angle)) * math.pi / 2 + phase)
            elif label == 4:
                pattern = torch.sign(torch.sin(frequency * x + phase) * torch.sin(frequency * y + phase))
            elif label == 5:
                pattern = 2 * torch.exp(-(radius**2) / u(0.05, 0.15)) - 1
            elif label == 6:
                pattern = 2 * torch.exp(-((radius - u(0.4, 0.6)) ** 2) / 0.01) - 1
            elif label == 7:
                pattern = (torch.rand(size, size, generator=generator) < 0.08).float() * 2 - 1
            elif label == 8:
                pattern = x * u(0.7, 1.0) + u(-0.2, 0.2)
            else:
                pattern = y * u(0.7, 1.0) + u(-0.2, 0.2)
            image = u(0.6, 1.0) * pattern + 0.25 * torch.randn(size, size, generator=generator)
            images.append(image.clamp(-1, 1).expand(3, -1, -1))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


@pytest.mark.parametrize("patch_embedding", ["linear", "conv_stem"])
def test_tiny_hnf_learns_procedural_ten_class_problem(patch_embedding):
    torch.manual_seed(0)
    train_x, train_y = procedural_images(30, 32, seed=1)
    test_x, test_y = procedural_images(10, 32, seed=2)
    model = HNFForImageClassification(tiny_hnf_config(patch_embedding=patch_embedding))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        for batch in torch.randperm(len(train_y), generator=generator).split(30):
            loss = model(pixel_values=train_x[batch], labels=train_y[batch]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        accuracy = (model(pixel_values=test_x).logits.argmax(-1) == test_y).float().mean().item()
    assert accuracy >= 0.5, f"held-out accuracy {accuracy:.2f} on 10 classes (chance 0.10)"


def test_hidden_states_are_each_layers_tokens_and_attentions_are_refused():
    model = HNFForImageClassification(tiny_hnf_config()).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(pixel_values=pixels)
        out = model(pixel_values=pixels, output_hidden_states=True)
    assert plain.hidden_states is None
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, 65, 32), (2, 17, 32), (2, 5, 32)]  # [patches, CLS] per scale
    assert torch.allclose(out.logits, plain.logits, atol=1e-6)
    with pytest.raises(ValueError, match="no attention weights"):
        model(pixel_values=pixels, output_attentions=True)
    vit = HNFForImageClassification(tiny_hnf_config(image_encoder="vit")).eval()
    with torch.no_grad():
        states = vit(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert [tuple(h.shape) for h in states] == [(2, 65, 32)] * 3
