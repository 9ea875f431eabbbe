import pytest

from spkid.config import ConfigError
from spkid.train.config import Recipe


@pytest.mark.parametrize("lr", [-1e-3, 0.0])
def test_recipe_rejects_a_learning_rate_that_is_not_positive(lr):
    with pytest.raises(ConfigError, match="recipe.lr"):
        Recipe(segment=8, batch=2, lr=lr, weight_decay=0.0, warmup=0, steps=2, valid_every=1)
