import torch

from geot.data.augment import NONE, STRONG, WEAK, Augment


def test_none_is_identity_and_views_are_seeded():
    g = torch.Generator().manual_seed(0)
    pos, normal = torch.randn(100, 3), torch.nn.functional.normalize(torch.randn(100, 3), dim=1)
    p, n = NONE(pos, normal, g)
    torch.testing.assert_close(p, pos)
    torch.testing.assert_close(n, normal)
    a = STRONG(pos, normal, torch.Generator().manual_seed(5))
    b = STRONG(pos, normal, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a[0], b[0])


def test_rotation_preserves_shape_and_handedness():
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(50, 3)
    normal = torch.nn.functional.normalize(torch.randn(50, 3), dim=1)
    p, n = Augment(rotate_deg=30, tilt_deg=10)(pos, normal, g)
    dist = lambda x: (x[:, None] - x[None]).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(dist(p), dist(pos), atol=1e-4, rtol=1e-4)
    # a proper rotation: the signed volume of three points keeps its sign
    vol = lambda x: torch.det(torch.stack([x[1] - x[0], x[2] - x[0], x[3] - x[0]]))  # noqa: E731
    assert torch.sign(vol(p)) == torch.sign(vol(pos))
    torch.testing.assert_close(n.norm(dim=1), torch.ones(50))


def test_normals_stay_perpendicular_under_anisotropic_scale():
    g = torch.Generator().manual_seed(2)
    # points on the plane x + y + z = 0 with its normal
    a, b = torch.randn(20, 1), torch.randn(20, 1)
    pos = a * torch.tensor([[1.0, -1, 0]]) + b * torch.tensor([[0.0, 1, -1]])
    normal = torch.nn.functional.normalize(torch.ones(20, 3), dim=1)
    p, n = Augment(anisotropic=0.3, scale=0.2)(pos, normal, g)
    tangent = p[1:] - p[:1]
    assert (tangent @ n[0]).abs().max() < 1e-5


def test_weak_is_gentler_than_strong():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    pos, normal = torch.randn(500, 3), torch.nn.functional.normalize(torch.randn(500, 3), dim=1)
    weak = (WEAK(pos, normal, g1)[0] - pos).norm(dim=1).mean()
    strong = (STRONG(pos, normal, g2)[0] - pos).norm(dim=1).mean()
    assert weak < strong
