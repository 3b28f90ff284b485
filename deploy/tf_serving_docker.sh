#!/usr/bin/env bash
# Serves a run's export with TensorFlow Serving's own image (REST on 8501), batching and warm-up on:
#   deploy/tf_serving_docker.sh runs/mnist_lenet/<time> [mnist_lenet]
# then the same request as `python -m pipeline serve` answers (README, "Serving over HTTP"). The image's
# entrypoint adds --model_name=$MODEL_NAME --model_base_path=/models/$MODEL_NAME and passes these flags on.
set -euo pipefail
run_dir=$(cd "$1" && pwd)
name=${2:-$(basename "$(ls -d "$run_dir"/export/*/ | head -n 1)")}   # export/<name>/
deploy_dir=$(cd "$(dirname "$0")" && pwd)

docker run --rm -p 127.0.0.1:8501:8501 \
  --mount "type=bind,source=$run_dir/export/$name,target=/models/$name,readonly" \
  --mount "type=bind,source=$deploy_dir/batching_parameters.txt,target=/config/batching_parameters.txt,readonly" \
  -e MODEL_NAME="$name" \
  "${TF_SERVING_IMAGE:-tensorflow/serving:latest}" \
  --enable_batching=true \
  --batching_parameters_file=/config/batching_parameters.txt \
  --enable_model_warmup=true \
  --file_system_poll_wait_seconds=1
