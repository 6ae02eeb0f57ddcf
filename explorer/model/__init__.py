"""Training and scoring: MUG, the trainer, the learner that scores candidates and trains a round,
the rewards and the evaluation."""
