"""The Ray layer: actor groups on placement groups, the DeepSpeed learner, and the model-holding roles."""
