"""MLPerf recommendation benchmarks (DLRM-v2)."""
