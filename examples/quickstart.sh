#!/usr/bin/env bash
# Quick start: calibrate a real pretrained model (PP-OCRv4 text detector) on real images, on the CPU.
# Models and images come from PyPI packages (rapidocr-onnxruntime, scikit-image); nothing else is fetched.
set -euo pipefail
WORK="${1:-trtq-quickstart}"
mkdir -p "$WORK/imgs"
cd "$WORK"
if [ ! -f ch_PP-OCRv4_det_infer.onnx ]; then
  python -m pip download -q --no-deps -d wheels rapidocr-onnxruntime==1.4.4
  python -m zipfile -e wheels/rapidocr_onnxruntime-1.4.4-py3-none-any.whl pkg
  cp pkg/rapidocr_onnxruntime/models/*.onnx .
fi
python -m pip install -q scikit-image==0.26.0
python - <<'PY'
import shutil, pathlib, skimage
src = pathlib.Path(skimage.__file__).parent / "data"
for name in ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png", "coins.png",
             "horse.png", "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg"]:
    shutil.copy(src / name, pathlib.Path("imgs") / name)
held = pathlib.Path("held")  # the two images with text, held out: quantize judges on them, never fits to them
held.mkdir(exist_ok=True)
for name in ["page.png", "text.png"]:
    shutil.copy(src / name, held / name)
PY
set -x
calib run ch_PP-OCRv4_det_infer.onnx --data imgs --shape x:1x3x640x640 --preset paddleocr \
  --cache calib.cache --json calib.json --report calib.html
calib show calib.cache | head -n 12
precision compare ch_PP-OCRv4_det_infer.onnx --data imgs --shape x:1x3x640x640 --preset paddleocr \
  --cache calib.cache --precision both --limit 2 --report compare.html || true
# the accurate INT8 model in one command: ranges, the 8 worst layers in FP32, the Q/DQ ONNX for
# TensorRT 11 / ONNX Runtime, judged against FP32 on the held-out images
precision quantize ch_PP-OCRv4_det_infer.onnx --data imgs --eval-data held --shape x:1x3x640x640 \
  --preset paddleocr --pin-worst 8 --metric mask-iou --binarize 0.3 -o det.int8.onnx --report quantize.html
