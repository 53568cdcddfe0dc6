"""Slice geometry (dicom2matrix.stacks) on stacks whose answer is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicom2matrix.stacks import (BY_INSTANCE_NUMBER, Stack, geometry_warnings, group, sort_along_normal,
                                 spacing_report, tilt_deg)

ALONG_THE_NORMAL = "position along the slice normal"


def stack_of(images) -> Stack:
    stack = Stack(key=(), images=list(images))
    sort_along_normal(stack)
    return stack


def test_axial_slices_are_sorted_by_z_whatever_their_order_and_numbers(make_image):
    stack = stack_of(make_image(position=(0.0, 0.0, z), instance_number=n)
                     for z, n in [(5.0, 1), (1.0, 2), (3.0, 3), (2.0, 4), (4.0, 5)])
    assert stack.sorted_by == ALONG_THE_NORMAL
    assert stack.positions == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [i.instance_number for i in stack.images] == [2, 4, 3, 5, 1]
    assert list(stack.normal) == [0.0, 0.0, 1.0]


def test_a_normal_pointing_down_orders_the_slices_from_the_top(make_image):
    # Columns run towards -y: the normal row × column is -z, so the highest slice comes first.
    flipped = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    stack = stack_of(make_image(orientation=flipped, position=(0.0, 0.0, z)) for z in [1.0, 3.0, 2.0])
    assert list(stack.normal) == [0.0, 0.0, -1.0]
    assert [i.position[2] for i in stack.images] == [3.0, 2.0, 1.0]
    assert stack.positions == [-3.0, -2.0, -1.0]


def test_an_oblique_stack_is_sorted_along_its_own_normal_and_is_not_tilted(make_image):
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    normal = np.array([0.0, -s, c])             # (1, 0, 0) × (0, cos 30°, sin 30°)
    offset = np.array([12.0, 3.0, -40.0])       # the same in-plane shift for every slice
    stack = stack_of(make_image(orientation=(1.0, 0.0, 0.0, 0.0, c, s), position=tuple(offset + d * normal))
                     for d in [4.0, 0.0, 2.0, 6.0])
    along = float(offset @ normal)
    assert stack.positions == pytest.approx([along, along + 2, along + 4, along + 6])
    assert np.allclose(stack.normal, normal)
    assert tilt_deg(stack) == 0.0
    assert spacing_report(stack.positions)["slice_spacing_mm"] == 2.0


def test_gantry_tilt_is_the_shear_of_the_slice_positions(make_image):
    # Each slice 1.25 mm up the normal is shifted tan 20° × 1.25 mm along y: sheared by 20°.
    shear = math.tan(math.radians(20))
    stack = stack_of(make_image(position=(0.0, shear * z, z)) for z in [0.0, 1.25, 2.5, 3.75, 5.0])
    assert stack.positions == [0.0, 1.25, 2.5, 3.75, 5.0]   # spacing is along the normal, not the shear
    tilt = tilt_deg(stack)
    assert tilt == 20.0
    spacing = spacing_report(stack.positions)
    assert geometry_warnings(stack, spacing, tilt) == [
        "gantry tilt: the slices are sheared by 20.0° from the normal; the volume keeps the acquired slices, "
        "not resampled"]


def test_no_tilt_without_two_positioned_slices(make_image):
    assert tilt_deg(stack_of([make_image()])) is None
    assert tilt_deg(stack_of([make_image(position=(0.0, 0.0, 1.0)), make_image(position=(0.0, 0.0, 1.0))])) is None
    assert tilt_deg(stack_of([make_image(orientation=None), make_image(orientation=None)])) is None


def test_a_stack_with_a_slice_without_position_has_no_tilt(make_image):
    # InstanceNumber order puts the slice without a position last: there is no slice vector to measure.
    stack = stack_of([make_image(instance_number=1), make_image(instance_number=2, position=None)])
    assert stack.sorted_by == BY_INSTANCE_NUMBER
    assert tilt_deg(stack) is None


def test_slices_without_positions_keep_instance_number_order(make_image):
    stack = stack_of(make_image(instance_number=n, position=None if n == 2 else (0.0, 0.0, -n))
                     for n in [3, 1, 2])
    assert stack.sorted_by == BY_INSTANCE_NUMBER
    assert [i.instance_number for i in stack.images] == [1, 2, 3]
    assert stack.positions == [1.0, 2.0, 3.0]   # an order, not millimetres


def test_duplicate_positions_are_left_out_and_recorded(make_image):
    images = [make_image(position=(0.0, 0.0, z), instance_number=n)
              for z, n in [(1.0, 1), (2.0, 2), (2.0004, 3), (3.0, 4)]]
    stack = stack_of(images)
    assert stack.positions == [1.0, 2.0, 3.0]
    assert [i.instance_number for i in stack.images] == [1, 2, 4]
    assert stack.duplicates == [(images[2], "duplicate slice position (2.000 mm along the normal) of a slice kept "
                                            "in the volume")]
    assert geometry_warnings(stack, spacing_report(stack.positions), 0.0) == ["1 duplicate position(s) left out"]


def test_at_one_position_the_readable_slice_is_kept_over_a_broken_one(make_image):
    broken = make_image(position=(0.0, 0.0, 2.0), instance_number=1, pixel_failure="truncated pixel data")
    sound = make_image(position=(0.0, 0.0, 2.0), instance_number=9)
    stack = stack_of([broken, sound, make_image(position=(0.0, 0.0, 1.0))])
    assert stack.images[1] is sound
    assert [d for d, _ in stack.duplicates] == [broken]


def test_spacing_gaps_and_missing_slices():
    report = spacing_report([0.0, 2.5, 5.0, 10.0, 12.5])
    assert report == {
        "slice_spacing_mm": 2.5,
        "spacing_mm": {"min": 2.5, "median": 2.5, "max": 5.0},
        "uniform_spacing": False,
        "gaps": [{"after_slice": 2, "spacing_mm": 5.0}],
        "missing_slices": 1,
    }


def test_uneven_spacing_that_leaves_no_slice_out(make_image):
    report = spacing_report([0.0, 1.0, 2.0, 3.2, 4.2])
    assert report["gaps"] == [{"after_slice": 2, "spacing_mm": 1.2}] and report["missing_slices"] == 0
    assert geometry_warnings(stack_of([make_image()]), report, None) == [
        "uneven slice spacing: 1 step(s) depart from the median"]


def test_missing_slices_are_warned_about(make_image):
    report = spacing_report([0.0, 1.0, 4.0, 5.0])   # one step of 3: two slices missing
    assert report["missing_slices"] == 2
    assert geometry_warnings(stack_of([make_image()]), report, None) == ["about 2 slice(s) missing: 1 long step(s)"]


def test_one_slice_has_no_spacing():
    assert spacing_report([7.0]) == {"slice_spacing_mm": None, "spacing_mm": None, "uniform_spacing": True,
                                     "gaps": [], "missing_slices": 0}


def test_a_series_that_mixes_thicknesses_becomes_two_stacks_in_a_stable_order(make_image):
    thin = [make_image(thickness=1.0, position=(0.0, 0.0, float(z))) for z in (3, 1, 2)]
    thick = [make_image(thickness=4.0, position=(0.0, 0.0, float(z))) for z in (4, 0)]
    later = [make_image(series_uid="1.2.3.9", series_number="10", position=(0.0, 0.0, float(z))) for z in (1, 2)]
    earlier = [make_image(series_uid="1.2.3.8", series_number="2", position=(0.0, 0.0, float(z))) for z in (1, 2)]
    stacks = group(later + thick + thin + earlier)
    assert [(s.first.series_number, s.first.thickness, s.positions) for s in stacks] == [
        ("1", 1.0, [1.0, 2.0, 3.0]), ("1", 4.0, [0.0, 4.0]), ("2", 1.0, [1.0, 2.0]), ("10", 1.0, [1.0, 2.0])]
    assert stacks[0].split_by == stacks[1].split_by == ["slice thickness"]
    assert [s.label for s in stacks] == ["series 1 1 mm", "series 1 4 mm", "series 2", "series 10"]
    assert stacks[2].split_by == []


def test_orientations_that_agree_to_four_decimals_are_one_stack(make_image):
    nearly = (1.0, 0.00001, 0.0, 0.0, 1.0, 0.0)
    stacks = group([make_image(position=(0.0, 0.0, 1.0)), make_image(orientation=nearly, position=(0.0, 0.0, 2.0))])
    assert len(stacks) == 1 and stacks[0].positions == pytest.approx([1.0, 2.0])
