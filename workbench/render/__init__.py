"""Results -> plotly figures and pandas tables. Pure functions: no model access, no recomputation."""
