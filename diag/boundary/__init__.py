"""Decision-boundary instability of ALE policies (RA-NLD, Korkmaz ICML 2024): policies, episodes, analysis."""
