"""DPO implicit reward as token-level credit assignment (Rafailov et al. 2024, "From r to Q*")."""
