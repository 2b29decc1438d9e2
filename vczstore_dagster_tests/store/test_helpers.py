"""The test helpers themselves: ground truth and digests must be able to fail."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

from vczstore_dagster_tests import helpers


@pytest.fixture(scope="module")
def converted(vcf_batch, tmp_path_factory):
    vcf = vcf_batch("H", 12, num_variants=120)
    out = tmp_path_factory.mktemp("helpers") / "h.vcz"
    helpers.bio2zarr_convert([vcf], out, samples_chunk_size=5, variants_chunk_size=50)
    return vcf, out


def test_ground_truth_accepts_plain_bio2zarr(converted):
    vcf, vcz = converted
    table = helpers.assert_matches_bcftools(zarr.open_group(str(vcz), mode="r"), [vcf])
    assert len(table.samples) == 12 and len(table.rows) == 120


@pytest.mark.parametrize("field", ["call_DP", "call_genotype", "call_HQ", "call_FT"])
def test_ground_truth_detects_one_changed_value(converted, tmp_path, field):
    vcf, vcz = converted
    copy = tmp_path / "copy.vcz"
    shutil.copytree(vcz, copy)
    group = zarr.open_group(str(copy), mode="r+")
    array = group[field]
    value = np.asarray(array[7, 3])
    if field == "call_FT":
        array[7, 3] = "PASS" if value != "PASS" else "LowDP"
    elif field == "call_genotype":
        array[7, 3] = [1, 1] if list(value) != [1, 1] else [0, 0]
    elif field == "call_HQ":
        new = value.copy()
        new[0] = 49 if new[0] != 49 else 48
        array[7, 3] = new
    else:
        array[7, 3] = 59 if value != 59 else 58
    with pytest.raises(AssertionError, match=r"sample H00003"):
        helpers.assert_matches_bcftools(zarr.open_group(str(copy), mode="r"), [vcf])


def test_ground_truth_detects_removed_samples(converted):
    vcf, vcz = converted
    group = zarr.open_group(str(vcz), mode="r")
    with pytest.raises(AssertionError, match="samples differ: expected 11, got 12; missing "
                                             r"\[\], extra \['H00004'\]$"):
        helpers.assert_matches_bcftools(group, [vcf], removed=["H00004"])


def test_ground_truth_detects_reordered_samples(converted, tmp_path):
    """The same samples and calls in another column order: not the truth."""
    vcf, _ = converted
    names = helpers.vcf_samples(vcf)
    swapped = [names[1], names[0], *names[2:]]
    reordered = tmp_path / "reordered.vcf.gz"
    helpers.run(["bcftools", "view", "--no-version", "-s", ",".join(swapped), "-Oz", "-o",
                 reordered, vcf])
    helpers.run(["bcftools", "index", "-f", reordered])
    vcz = helpers.bio2zarr_convert([reordered], tmp_path / "reordered.vcz", samples_chunk_size=5)
    group = zarr.open_group(str(vcz), mode="r")
    helpers.assert_matches_bcftools(group, [reordered])  # positive control: its own truth
    with pytest.raises(AssertionError, match="; same set, different order$"):
        helpers.assert_matches_bcftools(group, [vcf])


def test_ground_truth_compares_the_ploidy_of_missing_calls(vcf_batch, tmp_path):
    """A haploid sample's missing call is "." ([-1, -2]); written as a diploid missing call
    ([-1, -1], "./.") it differs from the truth."""
    males = ("H00001", "H00004")
    vcf = vcf_batch("H", 6, num_variants=120, haploid_contigs=("chr2",), haploid_samples=males)
    vcz = helpers.bio2zarr_convert([vcf], tmp_path / "h.vcz", samples_chunk_size=5)
    group = zarr.open_group(str(vcz), mode="r+")
    gt = np.asarray(group["call_genotype"][...])
    v, j = np.argwhere((gt[:, :, 0] == -1) & (gt[:, :, 1] == -2))[0]
    assert str(group["sample_id"][j]) in males
    helpers.assert_matches_bcftools(group, [vcf])  # positive control
    group["call_genotype"][v, j] = [-1, -1]
    with pytest.raises(AssertionError, match=rf"sample {group['sample_id'][j]} GT: expected "
                                             r"'\.', got '\./\.'"):
        helpers.assert_matches_bcftools(zarr.open_group(str(vcz), mode="r"), [vcf])


def test_normalisation_rules():
    assert helpers._norm_value(".,.") == "."
    assert helpers._norm_value("12.345678") == helpers._norm_value("12.346")
    assert helpers._norm_value("1,.") != helpers._norm_value("1")
    assert helpers._norm_gt("0|.") == helpers._norm_gt("0/.")
    assert helpers._norm_gt(".|.") == helpers._norm_gt("./.")
    assert helpers._norm_gt("0|1") != helpers._norm_gt("0/1")
    assert helpers._norm_gt(".") != helpers._norm_gt("./.")


def test_tree_digest_sees_every_byte(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c").write_bytes(b"x")
    before = helpers.tree_digest(tmp_path)
    assert list(before) == ["a/b/c"]
    (tmp_path / "a" / "b" / "c").write_bytes(b"y")
    assert "changed" in helpers.digest_diff(before, helpers.tree_digest(tmp_path))
    (tmp_path / "d").write_bytes(b"")
    assert "added" in helpers.digest_diff(before, helpers.tree_digest(tmp_path))


def test_s3_digest_sees_every_byte(moto_s3):
    client = moto_s3.client()
    prefix = moto_s3.prefix_of(moto_s3.new_url("digest"))
    client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/x/y", Body=b"1")
    before = helpers.s3_digest(moto_s3, prefix)
    assert list(before) == ["x/y"]
    client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/x/y", Body=b"2")
    assert "changed" in helpers.digest_diff(before, helpers.s3_digest(moto_s3, prefix))
    # a sibling prefix sharing the same beginning is not included
    client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}-other/z", Body=b"3")
    assert set(helpers.s3_digest(moto_s3, prefix)) == {"x/y"}
