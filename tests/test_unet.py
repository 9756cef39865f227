"""UNet2D: architecture, shapes, errors, options and export paths."""

import re

import pytest
import torch
from torch import nn

from pipeline.networks import UNet2D

SMALL = (4, 8, 16, 32, 64)
CLASSIC = (64, 128, 256, 512, 1024)


def conv_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))]


def unet_parameter_count(in_channels: int, out_channels: int, widths: tuple[int, ...]) -> int:
    """Weights + biases of the architecture: 3x3 double convs, 2x2 up-convs, 1x1 head (no norm)."""

    def conv(cin: int, cout: int, kernel: int) -> int:
        return kernel * kernel * cin * cout + cout

    count, cin = 0, in_channels
    for width in widths[:4]:
        count += conv(cin, width, 3) + conv(width, width, 3)
        cin = width
    count += conv(widths[3], widths[4], 3) + conv(widths[4], widths[4], 3)
    for deeper, width in zip(widths[:0:-1], widths[3::-1], strict=True):
        count += conv(deeper, width, 2) + conv(2 * width, width, 3) + conv(width, width, 3)
    return count + conv(widths[0], out_channels, 1)


def seeded_unet(**kwargs) -> UNet2D:
    torch.manual_seed(0)
    return UNet2D(features=kwargs.pop("features", SMALL), **kwargs)


def test_classic_unet_has_23_conv_layers_and_the_architecture_parameter_count():
    model = UNet2D(in_channels=1, out_channels=2, features=CLASSIC)
    kernels = sorted(layer.kernel_size for layer in conv_layers(model))
    assert len(kernels) == 23
    assert kernels.count((3, 3)) == 18 and kernels.count((2, 2)) == 4 and kernels.count((1, 1)) == 1
    parameters = sum(parameter.numel() for parameter in model.parameters())
    assert parameters == unet_parameter_count(1, 2, CLASSIC)
    assert round(parameters / 1e6, 1) == 31.0


@pytest.mark.parametrize("widths", [SMALL, (3, 5, 7, 11, 13)])
def test_any_five_widths_give_the_architecture_parameter_count(widths):
    model = UNet2D(in_channels=3, out_channels=4, features=widths)
    assert sum(parameter.numel() for parameter in model.parameters()) == unet_parameter_count(3, 4, widths)


@pytest.mark.parametrize("shape", [(1, 1, 256, 256), (2, 1, 512, 512), (3, 1, 37, 50), (2, 1, 1, 17)])
def test_same_padding_returns_the_input_height_and_width(shape):
    model = seeded_unet(out_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(shape)).shape == (shape[0], 3, *shape[2:])


@pytest.mark.parametrize(("shape", "expected"), [((1, 1, 572, 572), (388, 388)), ((2, 1, 188, 252), (4, 68))])
def test_valid_padding_drops_the_paper_margin_of_184_pixels(shape, expected):
    model = seeded_unet(padding="valid").eval()
    with torch.no_grad():
        assert model(torch.randn(shape)).shape == (shape[0], 2, *expected)


def test_same_padding_of_an_odd_size_equals_the_padded_multiple_of_16_cropped_back():
    model = seeded_unet().eval()
    image = torch.randn(1, 1, 37, 50)
    with torch.no_grad():
        # 37 -> 48 (5 above, 6 below), 50 -> 64 (7 left, 7 right), zero padding centred.
        padded = model(nn.functional.pad(image, [7, 7, 5, 6]))
        assert torch.allclose(model(image), padded[:, :, 5:42, 7:57], atol=1e-6)


@pytest.mark.parametrize(("side", "nearest"), [(400, "396 or 412"), (100, "188"), (573, "572 or 588")])
def test_valid_padding_rejects_a_side_that_gives_no_integer_shape_and_names_the_nearest(side, nearest):
    model = seeded_unet(padding="valid")
    with pytest.raises(ValueError, match=rf"H={side}: .*nearest valid: {nearest}$"):
        model(torch.randn(1, 1, side, 188))


@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 3, 64, 64), (64, 64)])
def test_wrong_input_raises_one_value_error_saying_expected_and_given(shape):
    expected = re.escape(f"expects a 4D (N, C, H, W) tensor with C=1, got shape {list(shape)}")
    with pytest.raises(ValueError, match=expected):
        seeded_unet()(torch.randn(shape))


def test_scripted_model_keeps_the_input_check():
    scripted = torch.jit.script(seeded_unet())
    with pytest.raises(torch.jit.Error, match=r"with C=1, got shape \[2, 3, 32, 32\]"):
        scripted(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("norm", [None, "batch", "instance"])
def test_gradient_reaches_every_parameter(norm):
    model = seeded_unet(norm=norm, dropout=0.2).train()
    model(torch.randn(2, 1, 48, 40)).square().mean().backward()
    silent = [name for name, param in model.named_parameters() if param.grad is None or not param.grad.any()]
    assert not silent


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_scripted_model_matches_eager_at_every_size(padding):
    model = seeded_unet(padding=padding).eval()
    scripted = torch.jit.script(model)
    sizes = [(32, 32), (45, 70)] if padding == "same" else [(188, 188), (204, 236)]
    with torch.no_grad():
        for height, width in sizes:
            image = torch.randn(2, 1, height, width)
            torch.testing.assert_close(scripted(image), model(image))


def test_traced_model_matches_eager_at_the_traced_size():
    model = seeded_unet().eval()
    image = torch.randn(2, 1, 45, 70)
    with torch.no_grad():
        traced = torch.jit.trace(model, image)
        other = torch.randn(2, 1, 45, 70)
        torch.testing.assert_close(traced(other), model(other))


def test_onnx_export_matches_eager_in_onnxruntime(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = seeded_unet().eval()
    image = torch.randn(2, 1, 45, 70)
    path = tmp_path / "unet.onnx"
    torch.onnx.export(model, (image,), str(path), input_names=["image"], output_names=["logits"])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(image), rtol=1e-4, atol=1e-4)


def test_channels_last_runs_every_convolution_channels_last_and_matches_contiguous():
    model = seeded_unet(norm="batch").eval()
    image = torch.randn(2, 1, 45, 70)
    with torch.no_grad():
        expected = model(image)
        model = model.to(memory_format=torch.channels_last)
        layouts = []
        for layer in conv_layers(model):
            layer.register_forward_hook(
                lambda _, inputs, output: layouts.append(output.is_contiguous(memory_format=torch.channels_last))
            )
        result = model(image.to(memory_format=torch.channels_last))
    assert len(layouts) == 23 and all(layouts)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_on_cpu_runs_forward_and_backward():
    model = seeded_unet(norm="instance").train()
    image = torch.randn(2, 1, 48, 40)
    with torch.no_grad():
        expected = model(image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(image)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), expected, rtol=0.05, atol=0.05 * expected.abs().max().item())
    logits.float().mean().backward()
    assert all(parameter.grad is not None for parameter in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_on_cuda_runs_in_reduced_precision(dtype):
    model = seeded_unet().cuda().eval()
    image = torch.randn(2, 1, 48, 40, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
        assert model(image).dtype == dtype


@pytest.mark.parametrize(("norm", "layer_type"), [("batch", nn.BatchNorm2d), ("instance", nn.InstanceNorm2d)])
def test_norm_option_puts_a_norm_layer_after_every_3x3_convolution_without_conv_bias(norm, layer_type):
    model = seeded_unet(norm=norm)
    norms = [module for module in model.modules() if isinstance(module, layer_type)]
    assert len(norms) == 18 and all(layer.affine for layer in norms)
    assert all(layer.bias is None for layer in conv_layers(model) if layer.kernel_size == (3, 3))
    plain = seeded_unet()
    assert not any(isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)) for module in plain.modules())


def test_instance_norm_makes_the_output_independent_of_the_input_scale():
    model = seeded_unet(norm="instance").eval()
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(image * 7.0), model(image), rtol=1e-3, atol=1e-3)


def test_batch_norm_uses_batch_statistics_in_train_mode_and_running_statistics_in_eval():
    model = seeded_unet(norm="batch")
    first, other = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32) * 5 + 2
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(torch.cat([first, other]))[:1], model(torch.cat([first, first]))[:1])
        model.eval()
        torch.testing.assert_close(model(torch.cat([first, other]))[:1], model(first))


def test_dropout_is_active_in_train_mode_only():
    model = seeded_unet(dropout=0.5)
    image = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(image), model(image))
        model.eval()
        torch.testing.assert_close(model(image), model(image))
        no_dropout = seeded_unet(dropout=0.0).train()
        no_dropout.load_state_dict(model.state_dict())
        torch.testing.assert_close(no_dropout(image), model(image))


@pytest.mark.parametrize(
    ("kwargs", "fault"),
    [
        ({"features": (4, 8, 16, 32)}, "5 positive widths"),
        ({"features": (4, 8, 0, 32, 64)}, "5 positive widths"),
        ({"norm": "group"}, "norm must be one of"),
        ({"padding": "reflect"}, "padding must be one of"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"in_channels": 0}, "in_channels and out_channels >= 1"),
    ],
)
def test_constructor_rejects_bad_options(kwargs, fault):
    with pytest.raises(ValueError, match=fault):
        UNet2D(**{"features": SMALL, **kwargs})
