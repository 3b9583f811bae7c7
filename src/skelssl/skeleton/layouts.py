"""Joint layouts: joint names, bones, centre and normalisation joints, left/right pairs, body parts.

Every layout is a tree of bones rooted at its centre joint (the ST-GCN graph centre). Joint names come
from one shared vocabulary, so layouts whose joints correspond can be mapped onto each other
(:func:`layout_mapping`).

Normalisation points (``spine_base``, ``spine_mid``, ``spine_top``) are tuples of joint indices whose
mean is the point: a single joint on Kinect layouts, a midpoint (of the hips, of the shoulders) on
layouts without spine joints such as ``coco17``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from skelssl.errors import ConfigError
from skelssl.utils import closest

PART_NAMES = ("left_arm", "right_arm", "left_leg", "right_leg", "trunk")


@dataclass(frozen=True)
class Layout:
    """A skeleton's joint set and structure. Indices are 0-based."""

    name: str
    joints: tuple[str, ...]
    parents: tuple[int, ...]
    center: int
    spine_base: tuple[int, ...]
    spine_mid: tuple[int, ...]
    spine_top: tuple[int, ...]
    left_shoulder: int
    right_shoulder: int
    left_hip: int
    right_hip: int
    pairs: tuple[tuple[int, int], ...]
    parts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        v = len(self.joints)
        if len(self.parents) != v:
            raise ValueError(f"{self.name}: {len(self.parents)} parents for {v} joints")
        if self.parents[self.center] != self.center:
            raise ValueError(f"{self.name}: the centre joint must be its own parent")
        for j in range(v):  # every joint reaches the centre: the bones form one tree
            seen, k = set(), j
            while k != self.center:
                if k in seen or not 0 <= self.parents[k] < v:
                    raise ValueError(f"{self.name}: joint {j} does not reach the centre")
                seen.add(k)
                k = self.parents[k]
        flat = [j for pair in self.pairs for j in pair]
        if len(set(flat)) != len(flat):
            raise ValueError(f"{self.name}: a joint appears in two left/right pairs")
        if set(self.parts) != set(PART_NAMES):
            raise ValueError(f"{self.name}: body parts must be {PART_NAMES}")
        object.__setattr__(self, "parts", MappingProxyType(dict(self.parts)))

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # MappingProxyType does not pickle: send registered layouts by name, others by their fields
        if LAYOUTS.get(self.name) is self:
            return (get_layout, (self.name,))
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return (_rebuild, ({**fields, "parts": dict(self.parts)},))

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """Bones as ``(child, parent)`` pairs, the centre's self-pair excluded."""
        return tuple((j, p) for j, p in enumerate(self.parents) if j != p)

    @property
    def flip_permutation(self) -> tuple[int, ...]:
        """Joint order after a left/right swap: ``x_flipped[..., v, :] = x[..., perm[v], :]``."""
        perm = list(range(self.num_joints))
        for a, b in self.pairs:
            perm[a], perm[b] = b, a
        return tuple(perm)

    def index(self, joint: str) -> int:
        """Index of a joint by name."""
        try:
            return self.joints.index(joint)
        except ValueError:
            hint = closest(joint, self.joints)
            raise ConfigError(
                f"layout {self.name!r} has no joint {joint!r}" + (f" (did you mean {hint!r}?)" if hint else "")
            ) from None


# Shared vocabulary. Kinect v2 (NTU RGB+D) joint order, 0-based.
_NTU25_JOINTS = (
    "spine_base",
    "spine_mid",
    "neck",
    "head",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "left_hand",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "right_hand",
    "left_hip",
    "left_knee",
    "left_ankle",
    "left_foot",
    "right_hip",
    "right_knee",
    "right_ankle",
    "right_foot",
    "spine_shoulder",
    "left_hand_tip",
    "left_thumb",
    "right_hand_tip",
    "right_thumb",
)

NTU25 = Layout(
    name="ntu25",
    joints=_NTU25_JOINTS,
    # ST-GCN's NTU bone list, rooted at spine_shoulder (20); hand tips chain tip-thumb-hand as ST-GCN wires them.
    parents=(1, 20, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 20, 22, 7, 24, 11),
    center=20,
    spine_base=(0,),
    spine_mid=(1,),
    spine_top=(20,),
    left_shoulder=4,
    right_shoulder=8,
    left_hip=12,
    right_hip=16,
    pairs=((4, 8), (5, 9), (6, 10), (7, 11), (12, 16), (13, 17), (14, 18), (15, 19), (21, 23), (22, 24)),
    parts={
        "left_arm": (4, 5, 6, 7, 21, 22),
        "right_arm": (8, 9, 10, 11, 23, 24),
        "left_leg": (12, 13, 14, 15),
        "right_leg": (16, 17, 18, 19),
        "trunk": (0, 1, 2, 3, 20),
    },
    description="Kinect v2, 25 joints: NTU RGB+D 60/120, PKU-MMD",
)

KINECT20 = Layout(
    name="kinect20",
    joints=(
        "spine_base",
        "spine_mid",
        "spine_shoulder",
        "head",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
        "left_hand",
        "right_shoulder",
        "right_elbow",
        "right_wrist",
        "right_hand",
        "left_hip",
        "left_knee",
        "left_ankle",
        "left_foot",
        "right_hip",
        "right_knee",
        "right_ankle",
        "right_foot",
    ),
    parents=(1, 2, 2, 2, 2, 4, 5, 6, 2, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18),
    center=2,
    spine_base=(0,),
    spine_mid=(1,),
    spine_top=(2,),
    left_shoulder=4,
    right_shoulder=8,
    left_hip=12,
    right_hip=16,
    pairs=((4, 8), (5, 9), (6, 10), (7, 11), (12, 16), (13, 17), (14, 18), (15, 19)),
    parts={
        "left_arm": (4, 5, 6, 7),
        "right_arm": (8, 9, 10, 11),
        "left_leg": (12, 13, 14, 15),
        "right_leg": (16, 17, 18, 19),
        "trunk": (0, 1, 2, 3),
    },
    description="Kinect v1, 20 joints (SDK order: hip centre, spine, shoulder centre, head, …): "
    "NW-UCLA, UTD-MHAD, MSR Action3D, UTKinect. Kinect v1's 'spine' (spine_mid here) sits just above "
    "the hip centre, lower than Kinect v2's spine-mid",
)

_FIFTEEN_PARTS = {
    "left_arm": (3, 4, 5),
    "right_arm": (6, 7, 8),
    "left_leg": (9, 10, 11),
    "right_leg": (12, 13, 14),
    "trunk": (0, 1, 2),
}

SBU15 = Layout(
    name="sbu15",
    joints=(
        "head",
        "neck",
        "torso",
        "left_shoulder",
        "left_elbow",
        "left_hand",
        "right_shoulder",
        "right_elbow",
        "right_hand",
        "left_hip",
        "left_knee",
        "left_foot",
        "right_hip",
        "right_knee",
        "right_foot",
    ),
    parents=(1, 1, 1, 1, 3, 4, 1, 6, 7, 2, 9, 10, 2, 12, 13),
    center=1,
    spine_base=(9, 12),
    spine_mid=(2,),
    spine_top=(1,),
    left_shoulder=3,
    right_shoulder=6,
    left_hip=9,
    right_hip=12,
    pairs=((3, 6), (4, 7), (5, 8), (9, 12), (10, 13), (11, 14)),
    parts=_FIFTEEN_PARTS,
    description="SBU Kinect Interaction, 15 joints (OpenNI/NITE order)",
)

FLORENCE15 = Layout(
    name="florence15",
    joints=(
        "head",
        "neck",
        "torso",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
        "right_shoulder",
        "right_elbow",
        "right_wrist",
        "left_hip",
        "left_knee",
        "left_ankle",
        "right_hip",
        "right_knee",
        "right_ankle",
    ),
    parents=(1, 1, 1, 1, 3, 4, 1, 6, 7, 2, 9, 10, 2, 12, 13),
    center=1,
    spine_base=(9, 12),  # the hips' midpoint: the dataset's "torso" joint sits ~19 cm above the hip line
    spine_mid=(2,),
    spine_top=(1,),
    left_shoulder=3,
    right_shoulder=6,
    left_hip=9,
    right_hip=12,
    pairs=((3, 6), (4, 7), (5, 8), (9, 12), (10, 13), (11, 14)),
    parts=_FIFTEEN_PARTS,
    description="Florence 3D Actions, 15 joints (OpenNI order; coordinates reordered to x, height, depth)",
)

COCO17 = Layout(
    name="coco17",
    joints=(
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),
    # PySKL's coco graph: limbs hang from shoulders/hips, shoulders and eyes from the nose.
    parents=(0, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14),
    center=0,
    spine_base=(11, 12),
    spine_mid=(5, 6, 11, 12),
    spine_top=(5, 6),
    left_shoulder=5,
    right_shoulder=6,
    left_hip=11,
    right_hip=12,
    pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    parts={
        "left_arm": (5, 7, 9),
        "right_arm": (6, 8, 10),
        "left_leg": (11, 13, 15),
        "right_leg": (12, 14, 16),
        "trunk": (0, 1, 2, 3, 4),
    },
    description="COCO 17 keypoints (2D pose estimators: HRNet, ViTPose, …)",
)

LAYOUTS: Mapping[str, Layout] = MappingProxyType(
    {layout.name: layout for layout in (NTU25, KINECT20, SBU15, FLORENCE15, COCO17)}
)

# Joints that are the same body point under another name in another layout (used only when the exact
# name is absent from the source layout).
_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "neck": ("spine_shoulder",),
        "spine_shoulder": ("neck",),
        "torso": ("spine_mid",),
        "spine_mid": ("torso",),
        "left_hand": ("left_wrist",),
        "right_hand": ("right_wrist",),
        "left_wrist": ("left_hand",),
        "right_wrist": ("right_hand",),
        "left_foot": ("left_ankle",),
        "right_foot": ("right_ankle",),
        "left_ankle": ("left_foot",),
        "right_ankle": ("right_foot",),
    }
)


def _rebuild(fields: dict[str, object]) -> Layout:
    return Layout(**fields)  # type: ignore[arg-type]


def get_layout(name: str) -> Layout:
    """The layout called ``name``; a ``ConfigError`` naming the closest one otherwise."""
    try:
        return LAYOUTS[name]
    except KeyError:
        hint = closest(name, LAYOUTS)
        raise ConfigError(
            f"unknown layout {name!r}"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + f"; known layouts: {', '.join(LAYOUTS)}"
        ) from None


def layout_mapping(source: Layout | str, target: Layout | str) -> tuple[int, ...]:
    """Indices into ``source`` giving each joint of ``target``: ``x_target = x_source[..., idx, :]``.

    Joints match by name, then through a small alias table (neck ≈ spine_shoulder, hand ≈ wrist,
    foot ≈ ankle, torso ≈ spine_mid). Raises ``ConfigError`` naming the target joints with no
    counterpart, e.g. ``coco17`` → ``ntu25`` (COCO has no spine).
    """
    src = get_layout(source) if isinstance(source, str) else source
    dst = get_layout(target) if isinstance(target, str) else target
    idx: list[int] = []
    missing: list[str] = []
    for joint in dst.joints:
        candidates = (joint, *_ALIASES.get(joint, ()))
        found = next((src.joints.index(c) for c in candidates if c in src.joints), None)
        if found is None:
            missing.append(joint)
        else:
            idx.append(found)
    if missing:
        raise ConfigError(f"cannot map layout {src.name!r} onto {dst.name!r}: no counterpart for {', '.join(missing)}")
    return tuple(idx)
