"""Building blocks: transport-free logic between the API edges and the components."""
