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
for name in ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "page.png", "text.png",
             "motorcycle_left.png", "hubble_deep_field.jpg"]:
    shutil.copy(src / name, pathlib.Path("imgs") / name)
PY
set -x
calib run ch_PP-OCRv4_det_infer.onnx --data imgs --shape x:1x3x640x640 --preset paddleocr \
  --cache calib.cache --json calib.json --report calib.html
calib show calib.cache | head -n 12
precision compare ch_PP-OCRv4_det_infer.onnx --data imgs --shape x:1x3x640x640 --preset paddleocr \
  --cache calib.cache --precision both --limit 2 --report compare.html || true
