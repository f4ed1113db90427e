"""Regenerate docs/gallery/: one PNG per kind of figure, with the default settings.

    .venv/bin/python docs/make_gallery.py

Small random models (fixed seeds), so the figures show the layout, labels and
scales rather than meaningful explanations. The plotly figure is saved as HTML
and photographed with headless Chromium (``make browser`` installs it); without
Chromium that one picture is left out.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import plotnine as p9  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

import innsight as ins  # noqa: E402

OUT = Path(__file__).parent / "gallery"
DPI = 100
CAPTIONS: dict[str, str] = {}


def data(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def smooth(*shape: int, seed: int = 1) -> torch.Tensor:
    """Blurred noise: images with blobs rather than pixel noise (smaller PNGs too)."""
    x = data(*shape, seed=seed)
    for _ in range(3):
        x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    return x / x.std()


def save(figure: object, name: str, caption: str, dpi: int = DPI) -> None:
    path = OUT / f"{name}.png"
    if isinstance(figure, p9.ggplot):
        figure.save(path, dpi=dpi, verbose=False)
    else:
        figure.save(path, dpi=dpi)
    shrink(path, caption)


def shrink(path: Path, caption: str) -> None:
    """Store the PNG with a 256-colour palette (a third of the size, same look)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE,
                                               dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    CAPTIONS[path.name] = caption
    print(f"{path.name}: {path.stat().st_size // 1024} KB")


def screenshot(figure, name: str, caption: str) -> None:
    browser = shutil.which("chromium")
    if browser is None:
        print(f"{name}: skipped, no chromium (run `make browser`)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "figure.html"
        figure.write_html(page, include_plotlyjs=True)
        path = OUT / f"{name}.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                        f"--user-data-dir={tmp}/profile", "--virtual-time-budget=5000",
                        f"--window-size={int(figure.layout.width)},{int(figure.layout.height)}",
                        f"--screenshot={path}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
    shrink(path, caption)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    torch.manual_seed(0)

    # tabular: LRP relevance per feature, two samples x three outputs
    mlp = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    features = ["age", "income", "debt", "savings", "children", "tenure"]
    tab = ins.convert(mlp, input_dim=[6], input_names=[features],
                      output_names=[["low", "medium", "high"]])
    lrp = ins.run_lrp(tab, data(40, 6), rule_name="epsilon")
    save(lrp.plot(data_idx=[0, 1]), "tabular_local",
         "Tabular, `plot()`: LRP relevance per feature, bars by sign, one facet per sample and output, info box with prediction and sum.")
    save(lrp.plot_global(), "tabular_global",
         "Tabular, `plot_global()`: box plots of |relevance| per feature over 40 samples.")
    save(lrp.plot(data_idx=0, show_input=True), "tabular_input",
         "Tabular, `plot(show_input=True)`: each feature's input value at the tip of its bar.")

    # signals: DeepLift contributions along a 1D signal, per channel
    cnn1d = nn.Sequential(nn.Conv1d(3, 4, 5, padding=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 50, 2)).eval()
    sig = ins.convert(cnn1d, input_dim=[3, 50])
    deeplift = ins.run_deeplift(sig, data(30, 3, 50))
    save(deeplift.plot(data_idx=[0, 1], aggr_channels=None), "signal_local",
         "1D signal, `plot(aggr_channels=None)`: DeepLift contribution along the signal, one line per channel; the info box adds the decomposition goal.")
    save(deeplift.plot_global(), "signal_global",
         "1D signal, `plot_global()`: box plots of |contribution| (channels summed) per signal position.")
    save(deeplift.plot(data_idx=[0, 1], output_idx=[0], show_input=True), "signal_input",
         "1D signal, `plot(show_input=True)`: the input of each channel (line type) coloured by the contribution summed over channels.")

    # images 28 x 28: integrated gradients, heatmaps centred on 0
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 14 * 14, 10)).eval()
    img = ins.convert(cnn, input_dim=[1, 28, 28])
    digits = smooth(100, 1, 28, 28)
    intgrad = ins.run_intgrad(img, digits, n=20)  # times_input by default: smooth like the data
    save(intgrad.plot(data_idx=[0, 1], output_idx=[0, 1, 2]), "image28_local",
         "Image 28x28, `plot()`: integrated gradient heatmaps on a diverging scale centred on 0.")
    save(intgrad.plot_global(), "image28_global",
         "Image 28x28, `plot_global()`: mean |integrated gradient| over 100 samples per output.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mosaic warning is the point here
        save(intgrad.plot(data_idx=list(range(20))), "image28_mosaic",
             "Image 28x28, `plot()` of 20 samples x 10 outputs: more than 50 facets become one mosaic (samples down, outputs across); saved at 50 dpi.", dpi=60)

    # images 224 x 224 with three channels, summed
    big = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                        nn.Linear(64, 2)).eval()
    large = ins.run_grad(ins.convert(big, input_dim=[3, 224, 224]), smooth(2, 3, 224, 224),
                         times_input=True)
    save(large.plot(data_idx=[0, 1]), "image224_local",
         "Image 3x224x224, `plot()`: gradient x input summed over channels; at most five tick labels per axis; saved at 80 dpi.", dpi=80)
    save(large.plot(data_idx=[0, 1], show_input=True), "image224_input",
         "Image 3x224x224, `plot(show_input=True)`: the input in grey (channel mean) under the heatmap, each value as opaque as its magnitude; saved at 80 dpi.", dpi=80)

    # two input layers (image and tabular), two output layers
    two = TwoInTwoOut().eval()
    both = ins.run_deepshap(ins.convert(two, input_dim=[[2, 10, 10], [4]]),
                            [data(3, 2, 10, 10), data(3, 4)],
                            data_ref=[data(8, 2, 10, 10, seed=2), data(8, 4, seed=2)],
                            output_idx=[[0, 1], [0]])
    save(both.plot(data_idx=0), "two_inputs_two_outputs",
         "Two input layers (image, tabular) and two output layers, `plot()`: DeepSHAP panels composed, inputs side by side, outputs stacked.")
    save(both.plot_global(), "two_inputs_two_outputs_global",
         "The same model, `plot_global()`: mean heatmaps beside box plots.")

    # ConnectionWeights without data: global by nature, no predictions
    cw = ins.run_cw(tab)
    save(cw.plot(), "connection_weights",
         "ConnectionWeights without data, `plot()`: importance per feature; the info box shows only the sum (no prediction).")

    # the comparison helper: one method on two converted models, side by side
    other = ins.convert(tab.to_dict())
    cmp = ins.compare_models({"torch": tab, "from dict": other}, data(5, 6), method="Gradient",
                             output_idx=[0, 1])
    save(cmp.plot(data_idx=0), "compare_models",
         "`compare_models(...).plot()`: the same sample explained by two converted models, one facet per output and model on one scale.")

    layer_gallery()
    sequence_gallery()

    # plotly, photographed in headless Chromium
    screenshot(both.plot(data_idx=[0, 1], as_plotly=True), "plotly_two_inputs",
               "`plot(as_plotly=True)`: the plotly figure of the two-input model in headless Chromium (hover shows feature, value, prediction).")
    screenshot(intgrad.plot(data_idx=[0, 1], output_idx=[0, 1], as_plotly=True, show_input=True),
               "plotly_image_input",
               "`plot(as_plotly=True, show_input=True)`: plotly heatmaps over the grey input images (zero is transparent).")

    lines = ["# Gallery", "",
             "Every kind of figure with default settings, made by `docs/make_gallery.py`",
             "(random small models with fixed seeds: the figures show layout and labels, not",
             "meaningful explanations). Regenerate with `.venv/bin/python docs/make_gallery.py`.", ""]
    lines += [f"- [`{name}`]({name}): {caption}" for name, caption in CAPTIONS.items()]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")


def digits_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained for a few seconds on scikit-learn's 8 x 8 digits, the images
    (scaled to 0..1) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    print(f"digits CNN: training accuracy {accuracy:.3f}")
    return model.eval(), x, y


def layer_gallery() -> None:
    """Grad-CAM, attributions to a layer, token grids and the per-layer report."""
    model, x, y = digits_cnn()
    conv = ins.convert(model, input_dim=[1, 8, 8])
    first = torch.stack([torch.nonzero(y == digit)[0, 0] for digit in range(4)])
    cam = ins.run_gradcam(conv, x[first], output_idx=[0, 1, 2, 3])
    save(cam.plot(data_idx=[0, 1, 2, 3], show_input=True), "gradcam_digits",
         "`run_gradcam()` of a small CNN trained for seconds on the 8x8 digits 0-3 (rows) for the classes 0-3 (columns), over the input (white: ink). At the default layer (the last 8x8 feature map, receptive field 5x5) the own class's map (diagonal) covers the strokes in part and also blank space that tells the classes apart, e.g. left of the 1; over 200 digits its correlation with the ink is 0.2.")
    at_layer = ins.run_intgrad(conv, x[first], attribute_to="1", output_idx=[0, 1, 2, 3])
    save(at_layer.plot(data_idx=[0, 1, 2, 3]), "layer_feature_maps",
         "`run_intgrad(attribute_to='1')`: integrated gradients w.r.t. the 16 feature maps of the first ReLU (from the maps at a zero input), summed over channels.")
    save(ins.run_lrp(conv, x[first], output_idx=[0, 1, 2, 3], rule_name="epsilon",
                     keep_layers=True).plot_layer_report(), "layer_report",
         "`run_lrp(keep_layers=True).plot_layer_report()`: total relevance into and out of each layer (epsilon rule, 4 samples); the gaps are what biases and stabilisers absorbed.")

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                              num_heads=2, hidden_dim=16, mlp_dim=32,
                                              num_classes=3).eval()
    with torch.no_grad():
        vit.heads.head.weight.normal_(0, 0.3)  # torchvision starts the head at zero
    tokens = ins.run_grad(ins.convert(vit, input_dim=[3, 32, 32]), smooth(2, 3, 32, 32),
                          times_input=True, output_idx=[0, 1],
                          attribute_to="encoder.layers.encoder_layer_1.ln_1")
    save(tokens.plot(data_idx=[0, 1]), "vit_tokens_on_grid",
         "Vision transformer, gradient x activation of a block's 17 tokens: drawn on the 4x4 patch grid, the class token left out (features summed).")


SENTENCE = ("The film starts slowly , but the second half is wonderful : sharp dialogue , "
            "a moving score and two great leads . I would not watch it again though .").split(" ")


class Recurrent(nn.Module):
    """An LSTM over word vectors (batch first), its last state into three classes."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.rnn = nn.LSTM(width, 12, batch_first=True)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def sequence_gallery() -> None:
    """Token plots, heat strips over sequences, and a segmentation map's output nodes."""
    torch.manual_seed(0)
    words = [w if i == 0 else f" {w}" for i, w in enumerate(SENTENCE)]
    vocabulary = sorted(set(SENTENCE))
    table = data(len(vocabulary), 8, seed=5)  # a fixed random word vector per word
    x = table[[vocabulary.index(w) for w in SENTENCE]][None]
    conv = ins.convert(Recurrent().eval(), input_dim=[len(words), 8],
                       input_names=[[words, [f"e{i}" for i in range(8)]]],
                       output_names=[["negative", "neutral", "positive"]])
    lrp = ins.run_lrp(conv, x, rule_name="epsilon")
    save(lrp.plot(layout="strip", sequence_axis=0), "strip_tokens",
         "`plot(layout='strip', sequence_axis=0)`: LRP relevance of an LSTM's (tokens, features) input, features summed, as a heat strip over the tokens named by `input_names`; one row per sample and class, named with the info box.")
    cnn1d = nn.Sequential(nn.Conv1d(3, 4, 5, padding=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 50, 2)).eval()
    signal = ins.run_deeplift(ins.convert(cnn1d, input_dim=[3, 50]), data(2, 3, 50))
    save(signal.plot(data_idx=[0, 1], layout="strip"), "strip_signal",
         "1D signal, `plot(layout='strip')`: DeepLift contributions summed over channels as a heat strip along the signal (default names L1.. give plain cells).")
    relevance = lrp.get_result()[0].sum(axis=1).T  # (classes, tokens)
    save(ins.plot_tokens(relevance, words, ["negative", "neutral", "positive"], title="LRP"),
         "tokens", "`plot_tokens(relevance, tokens, target_names)`: relevance per token as coloured text, one row per explained target, colours centred on 0 with symmetric limits.")
    long = torch.cumsum(data(2, 1500, seed=6), dim=1) / 10
    save(ins.plot_tokens(long, [f" w{i % 97}" for i in range(1500)], ["next token", "span"]),
         "tokens_long", "`plot_tokens` of 1500 tokens: the rows wrap into lines as text does (at most 60 lines for both rows, so here lines of about 220 characters); saved at 60 dpi.", dpi=60)
    screenshot(ins.plot_tokens(relevance, words, ["negative", "neutral", "positive"],
                               as_plotly=True, title="LRP"), "plotly_tokens",
               "`plot_tokens(..., as_plotly=True)`: the same tokens in plotly (hover: position, token, value); `tokens_html` gives plain HTML for notebooks.")

    unet = TinyUNet().eval()
    seg = ins.convert(unet, input_dim=[3, 16, 16], output_names=[["road", "sky"], [f"h{i}" for i in range(16)], [f"w{i}" for i in range(16)]])
    nodes = [0 * 256 + 12 * 16 + 4, 1 * 256 + 3 * 16 + 10]  # road at (12, 4), sky at (3, 10)
    grad = ins.run_grad(seg, smooth(2, 3, 16, 16), output_idx=nodes, times_input=True)
    save(grad.plot(data_idx=[0, 1]), "segmentation_nodes",
         "A segmentation model's output map (classes, H, W): `output_idx` over the flattened map picks class-and-pixel nodes, named `<class>_<row>_<column>` from `output_names`; gradient x input per node.")


class TinyUNet(nn.Module):
    """A convolution down, a transposed convolution up: a map of two classes per pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 2, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(nn.functional.avg_pool2d(self.down(x), 2)))


class TwoInTwoOut(nn.Module):
    """An image (2, 10, 10) and a vector (4,) in; class logits (3) and a regression (2) out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.tab = nn.Linear(4, 5)
        self.cls = nn.Linear(3 * 8 * 8 + 5, 3)
        self.reg = nn.Linear(3 * 8 * 8 + 5, 2)

    def forward(self, image: torch.Tensor, vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joint = torch.cat([torch.relu(self.conv(image)).flatten(1), torch.relu(self.tab(vector))], 1)
        return self.cls(joint), self.reg(joint)


if __name__ == "__main__":
    main()
