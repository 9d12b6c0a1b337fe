#!/usr/bin/env bash
# Launch a recipe on several nodes: run this same command on every node.
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 launch/multinode.sh recipes/r1zero_qwen25_32b_deepscaler.yaml [key=value ...]
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 launch/multinode.sh recipes/r1zero_qwen25_32b_deepscaler.yaml [key=value ...]
# ACCELERATOR=cuda (default), npu or cpu selects the environment block below; NPROC_PER_NODE overrides the
# process count per node; PYTHON names the interpreter (default python3: the one with grpo's dependencies).
# Two "nodes" on one CPU machine (what tests/e2e/test_multinode.py runs):
#   ACCELERATOR=cpu NNODES=2 NODE_RANK=0 MASTER_ADDR=127.0.0.1 launch/multinode.sh recipes/countdown_tiny.yaml &
#   ACCELERATOR=cpu NNODES=2 NODE_RANK=1 MASTER_ADDR=127.0.0.1 launch/multinode.sh recipes/countdown_tiny.yaml
set -euo pipefail
: "${NNODES:?set NNODES, the number of nodes}"
: "${NODE_RANK:?set NODE_RANK, this node's index from 0}"
: "${MASTER_ADDR:?set MASTER_ADDR, node 0's address}"
MASTER_PORT=${MASTER_PORT:-29500}
ACCELERATOR=${ACCELERATOR:-cuda}

case "$ACCELERATOR" in
  cuda)
    NPROC=${NPROC_PER_NODE:-$(nvidia-smi -L | wc -l)}
    export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
    # export NCCL_SOCKET_IFNAME=eth0        # the interface that reaches the other nodes
    # export NCCL_IB_HCA=mlx5               # InfiniBand adapters, if any
    ;;
  npu)
    # Ascend: CANN's environment, then one process per NPU; DeepSpeed picks hccl once torch_npu imports.
    source /usr/local/Ascend/ascend-toolkit/set_env.sh
    NPROC=${NPROC_PER_NODE:-8}
    export HCCL_CONNECT_TIMEOUT=${HCCL_CONNECT_TIMEOUT:-1200}
    export DS_ACCELERATOR=npu
    # export HCCL_SOCKET_IFNAME=eth0
    ;;
  cpu)
    # gloo over TCP; one process per node unless told otherwise, one thread each (cores are shared)
    NPROC=${NPROC_PER_NODE:-1}
    export DS_ACCELERATOR=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    ;;
  *) echo "ACCELERATOR must be cuda, npu or cpu, got $ACCELERATOR" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" launch/run.py "$@"
