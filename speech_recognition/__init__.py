"""MLPerf speech recognition benchmarks (RNN-T)."""
