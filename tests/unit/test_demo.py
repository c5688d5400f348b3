"""The demo recipe ships with the package."""
def test_demo_recipe_ships_with_the_package():
    from posttrain.config import load_recipe
    from posttrain.demo import demo_recipe_path
    path = demo_recipe_path()
    assert path.is_file() and path.parent.name == "posttrain"  # inside the package, not the checkout
    recipe = load_recipe(path, [])
    assert recipe.method_name == "sft" and recipe.model.name == "smollm2-135m-instruct"
