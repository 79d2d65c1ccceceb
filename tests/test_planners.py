"""Planners find the known optimum of a linear-quadratic problem through the model protocol."""
import gymnasium as gym
import numpy as np
import pytest
import torch

from planners import PLANNERS, make_planner, warm_start
from planners.base import evaluate_costs

H = 3
F = np.array([[1.0, 0.1], [-0.1, 0.95]])
G = np.array([[0.5, 0.1], [0.0, 0.4]])
LAM = 0.05


class LinearQuadratic:
    """x_{t+1} = F x_t + G a_t; cost = |x_H - goal|^2 + LAM * sum_t |a_t|^2. Torch, differentiable."""

    def __init__(self, low=(-1.0, -1.0), high=(1.0, 1.0)):
        self.action_space = gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32))
        self.F, self.G = torch.tensor(F, dtype=torch.float32), torch.tensor(G, dtype=torch.float32)
        self.calls = 0

    def rollout(self, state, actions):                    # actions (B, H, A) -> (x_H (B, 2), actions)
        self.calls += 1
        a = torch.as_tensor(actions, dtype=torch.float32)
        x = torch.as_tensor(state, dtype=torch.float32).expand(a.shape[0], 2)
        for t in range(a.shape[1]):
            x = x @ self.F.T + a[:, t] @ self.G.T
        return x, a

    def cost(self, predictions, goal):
        x, a = predictions
        return ((x - torch.as_tensor(goal, dtype=torch.float32)) ** 2).sum(-1) + LAM * (a ** 2).sum((-1, -2))


class BatchedLinearQuadratic(LinearQuadratic):
    """Same model with the optional one-call-for-all-episodes methods."""

    def rollout_batch(self, states, actions):             # actions (E, B, H, A)
        E, B = actions.shape[:2]
        x0 = torch.as_tensor(np.stack(states), dtype=torch.float32).repeat_interleave(B, 0)
        x, a = self.rollout(x0, actions.reshape(E * B, *actions.shape[2:]))
        return x.reshape(E, B, 2), a.reshape(E, B, *a.shape[1:])

    def cost_batch(self, predictions, goals):
        x, a = predictions
        g = torch.as_tensor(np.stack(goals), dtype=torch.float32)[:, None]
        return ((x - g) ** 2).sum(-1) + LAM * (a ** 2).sum((-1, -2))


def boxed_optimum(x0, goal, low, high, iters=20000):
    """Exact optimum of the box-constrained QP by projected gradient descent (convex)."""
    M = np.concatenate([np.linalg.matrix_power(F, H - 1 - t) @ G for t in range(H)], axis=1)   # (2, H*A)
    r = goal - np.linalg.matrix_power(F, H) @ x0
    Q, q = M.T @ M + LAM * np.eye(H * 2), M.T @ r
    lo, hi = np.tile(low, H), np.tile(high, H)
    a, step = np.zeros(H * 2), 1.0 / np.linalg.eigvalsh(Q).max()
    for _ in range(iters):
        a = np.clip(a - step * (Q @ a - q), lo, hi)
    cost = a @ Q @ a - 2 * q @ a + r @ r
    return a.reshape(H, 2), cost


# three episodes planned together: interior optima, and one pushed against the bounds
X0 = [np.array([0.0, 0.0]), np.array([0.5, -0.3]), np.array([-0.2, 0.4])]
GOALS = [np.array([0.8, -0.4]), np.array([-0.3, 0.6]), np.array([3.0, 2.0])]
SMALL = {  # test sizes: quick, and still well inside each method's accuracy
    "cem": dict(samples=200, elites=20, iterations=25),
    "mppi": dict(samples=256, elites=32, iterations=20),
    "gradient": dict(starts=4, iterations=200, lr=0.1),
    "random_shooting": dict(samples=4000),
}


@pytest.mark.parametrize("box", [((-1.0, -1.0), (1.0, 1.0)), ((-1.0, -0.5), (1.0, 1.5))], ids=["sym", "asym"])
@pytest.mark.parametrize("name", ["cem", "mppi", "gradient", "random_shooting"])
def test_planner_finds_quadratic_optimum(name, box):
    model = LinearQuadratic(*box)
    planner = make_planner(name, model.action_space, horizon=H, seed=1, **SMALL[name])
    res = planner.plan(model, X0, GOALS)
    assert res.actions.shape == (3, H, 2) and res.actions.dtype == np.float32
    low, high = np.array(box[0]), np.array(box[1])
    assert np.all(res.actions >= low - 1e-6) and np.all(res.actions <= high + 1e-6)
    for e in range(3):
        a_star, c_star = boxed_optimum(X0[e], GOALS[e], low, high)
        c_plan = float(model.cost(model.rollout(X0[e], res.actions[e][None]), GOALS[e])[0])
        c_zero = float(model.cost(model.rollout(X0[e], np.zeros((1, H, 2))), GOALS[e])[0])
        assert c_plan >= c_star - 1e-4                    # the QP optimum is a true lower bound
        assert res.cost[e] >= c_star - 1e-4               # the reported cost is a real evaluation
        if name == "random_shooting":   # 6-D uniform sampling: near-optimal cost only, and corners are rare
            assert c_plan - c_star < (0.1 if e < 2 else 0.3) * (c_zero - c_star), (e, c_plan, c_star, c_zero)
            assert np.isclose(res.cost[e], c_plan, rtol=1e-4)
        else:
            assert np.abs(res.actions[e] - a_star).max() < 0.05, (e, res.actions[e], a_star)
            assert c_plan - c_star < 0.01 * (c_zero - c_star)


def test_bounded_episode_sits_on_the_bound():
    """Goal 3 is out of reach: its optimum saturates actions, so clamping/tanh is really exercised."""
    a_star, _ = boxed_optimum(X0[2], GOALS[2], np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    assert np.isclose(np.abs(a_star), 1.0).sum() >= 3


@pytest.mark.parametrize("name", ["cem", "mppi", "random_shooting"])
def test_batched_model_path_matches_per_episode_path(name):
    kw = dict(horizon=H, seed=3, **SMALL[name])
    kw.update(iterations=3) if "iterations" in kw else kw.update(samples=300)
    a, b = LinearQuadratic(), BatchedLinearQuadratic()
    ra = make_planner(name, a.action_space, **kw).plan(a, X0, GOALS)
    rb = make_planner(name, b.action_space, **kw).plan(b, X0, GOALS)
    np.testing.assert_allclose(ra.actions, rb.actions, atol=1e-5)
    assert ra.model_calls == 3 * rb.model_calls and a.calls == ra.model_calls and b.calls == rb.model_calls


def test_gradient_planner_refuses_non_differentiable_model():
    class NumpyModel(LinearQuadratic):
        def cost(self, predictions, goal):
            return super().cost(predictions, goal).detach().numpy()

    m = NumpyModel()
    with pytest.raises(ValueError, match="differentiable"):
        make_planner("gradient", m.action_space, horizon=H).plan(m, X0, GOALS)


def test_warm_start_shifts_and_pads():
    plan = np.arange(2 * 4 * 2, dtype=np.float32).reshape(2, 4, 2)
    out = warm_start(plan, 1)
    np.testing.assert_array_equal(out[:, :3], plan[:, 1:])
    np.testing.assert_array_equal(out[:, 3], 0)
    out = warm_start(plan, 3, pad=np.array([7.0, 8.0]))
    np.testing.assert_array_equal(out[:, 0], plan[:, 3])
    np.testing.assert_array_equal(out[:, 1:], np.broadcast_to([7.0, 8.0], (2, 3, 2)))
    np.testing.assert_array_equal(warm_start(plan, 9), np.zeros_like(plan))


@pytest.mark.parametrize("name", ["cem", "mppi", "gradient", "random_shooting"])
def test_warm_start_plan_is_kept(name):
    """Given the optimum as init and a tiny budget, every planner returns (nearly) the optimum."""
    model = LinearQuadratic()
    low, high = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    init = np.stack([boxed_optimum(X0[e], GOALS[e], low, high)[0] for e in range(3)]).astype(np.float32)
    tiny = {"cem": dict(samples=8, elites=2, iterations=1, result="best"),
            "mppi": dict(samples=8, elites=2, iterations=1, result="best"),
            "gradient": dict(starts=2, iterations=1, lr=1e-3),
            "random_shooting": dict(samples=8)}[name]
    cold = make_planner(name, model.action_space, horizon=H, seed=0, **tiny).plan(model, X0, GOALS)
    warm = make_planner(name, model.action_space, horizon=H, seed=0, **tiny).plan(model, X0, GOALS, init=init)
    assert np.abs(warm.actions - init).max() < 0.02
    assert np.all(warm.cost <= cold.cost + 1e-6)


def test_bad_inputs_name_the_value():
    model = LinearQuadratic()
    p = make_planner("cem", model.action_space, horizon=H)
    with pytest.raises(ValueError, match=r"init has shape \(2, 3, 2\), expected"):
        p.plan(model, X0, GOALS, init=np.zeros((2, H, 2)))
    with pytest.raises(ValueError, match="goals"):
        p.plan(model, X0, GOALS[:2])
    with pytest.raises(ValueError, match="unknown planner 'cme'"):
        make_planner("cme", model.action_space)
    with pytest.raises(ValueError, match="elites=50"):
        make_planner("cem", model.action_space, samples=10, elites=50)
    with pytest.raises(ValueError, match="unknown cem planner option"):
        make_planner("cem", model.action_space, temperature=1.0)
    with pytest.raises(ValueError, match="1-D gymnasium Box"):
        make_planner("cem", gym.spaces.Discrete(3))


def test_random_policy_uses_no_model_and_stays_in_bounds():
    model = LinearQuadratic((-0.2, -0.2), (0.2, 0.2))
    res = make_planner("random", model.action_space, horizon=4).plan(model, X0, GOALS)
    assert model.calls == 0 and res.model_calls == 0 and res.actions.shape == (3, 4, 2)
    assert np.all(np.abs(res.actions) <= 0.2 + 1e-6) and res.actions.std() > 0.05


def test_evaluate_costs_checks_shape():
    class Wrong(LinearQuadratic):
        def cost(self, predictions, goal):
            return super().cost(predictions, goal)[:1]

    with pytest.raises(ValueError, match="expected \\(E, B\\)"):
        evaluate_costs(Wrong(), X0, GOALS, torch.zeros(3, 5, H, 2))


def test_registry_covers_all_planners():
    assert set(PLANNERS) == {"cem", "mppi", "gradient", "random_shooting", "random"}


def test_wilson_interval_known_values():
    from planners.stats import wilson_interval

    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert wilson_interval(18, 20) == pytest.approx((0.69897, 0.97213), abs=1e-4)
    with pytest.raises(ValueError, match="successes=3, n=2"):
        wilson_interval(3, 2)
