"""Interactive explorers: controls + figures over a Result. No maths here; they re-slice results."""
