"""What a trained network does and why: the kernel-source ablation, test-time knock-outs,
block diagnostics, and the paired statistics and reports behind them."""
