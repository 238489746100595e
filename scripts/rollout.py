"""k-frame autoregressive rollouts of bouncing-ball world models (an EBT and / or a predictor) from the same context:
PSNR per horizon and ground truth / predictor / EBT pictures side by side.

    python scripts/rollout.py ebt_ckpt=outputs/bouncing/runs/EBT predictor_ckpt=outputs/bouncing/runs/PRED context=3

``key=value`` options (``--help`` lists them with their defaults) and outputs: :mod:`ebt.analysis.task_eval.rollouts`.
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.analysis.task_eval.rollouts")
