"""XGBoost's legacy binary model format (what `Booster.save_model` wrote before XGBoost 2 made
UBJSON the default, and what AWS's images 0.90-1 to 1.2-x left in model.tar.gz), converted to
XGBoost's JSON model, which XGBoost 3 reads. XGBoost 3.1 and later no longer read the binary
format themselves; AWS's test data holds such a model (models/saved_booster/xgboost-model).

The layout, little-endian, as XGBoost 1.x's learner.cc, gbtree_model.cc and tree_model.cc write
it (an optional "binf" magic first):

    LearnerModelParamLegacy   136 bytes: base_score f32, num_feature u32, num_class i32,
                              contain_extra_attrs i32, contain_eval_metrics i32, major u32,
                              minor u32, num_target u32, boost_from_average i32, reserved
    objective name, booster name   each a u64 length and its bytes
    GBTreeModelParam          160 bytes: num_trees i32, num_parallel_tree i32, num_feature i32,
                              pad i32, num_pbuffer i64, num_output_group i32,
                              size_leaf_vector i32, reserved
    per tree: TreeParam       148 bytes: num_roots i32, num_nodes i32, num_deleted i32,
                              max_depth i32, num_feature u32, size_leaf_vector i32, reserved
              nodes           20 bytes each: parent i32 (bit 31: is a left child), left i32,
                              right i32, split index u32 (bit 31: default left), split
                              condition or leaf value f32
              stats           16 bytes each: loss_chg f32, sum_hess f32, base_weight f32,
                              leaf_child_cnt i32
    tree_info                 num_trees i32 (each tree's output group)
    attributes                when contain_extra_attrs: u64 count, then (key, value) strings

Only the gbtree and dart boosters of trees are read; a gblinear model is refused by name.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from smalgo.algorithms.errors import UserError

_LEARNER_PARAM = struct.Struct("<fIiiiIIIi")  # then reserved words, 136 bytes in all
_LEARNER_PARAM_BYTES = 136
_GBTREE_PARAM = struct.Struct("<iiiiqii")
_GBTREE_PARAM_BYTES = 160
_TREE_PARAM = struct.Struct("<iiiiIi")
_TREE_PARAM_BYTES = 148
_NODE = np.dtype([("parent", "<i4"), ("left", "<i4"), ("right", "<i4"), ("sindex", "<u4"), ("value", "<f4")])
_STAT = np.dtype([("loss_chg", "<f4"), ("sum_hess", "<f4"), ("base_weight", "<f4"), ("leaf_child_cnt", "<i4")])
_LOW_31 = 0x7FFFFFFF


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name, self.pos = data, name, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise UserError(f"{self.name}: the legacy binary XGBoost model ends early (at byte {len(self.data)}).")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def string(self) -> str:
        (length,) = struct.unpack("<Q", self.take(8))
        if length > 1 << 20:
            raise UserError(f"{self.name}: not an XGBoost model (a string of {length} bytes at byte {self.pos - 8}).")
        return self.take(length).decode("utf-8", "replace")

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        return np.frombuffer(self.take(dtype.itemsize * count), dtype=dtype)


def is_legacy_binary(data: bytes) -> bool:
    """Whether `data` looks like the legacy binary format: not JSON or UBJSON (which start with
    '{'), and an objective name where the format puts one."""
    if data[:1] == b"{" or len(data) < _LEARNER_PARAM_BYTES + 8:
        return False
    start = 4 if data[:4] == b"binf" else 0
    (length,) = struct.unpack_from("<Q", data, start + _LEARNER_PARAM_BYTES)
    name = data[start + _LEARNER_PARAM_BYTES + 8 : start + _LEARNER_PARAM_BYTES + 8 + length]
    return 0 < length < 64 and b":" in name and name.replace(b":", b"").replace(b"_", b"").isalnum()


def legacy_binary_to_json(data: bytes, *, name: str) -> bytes:
    """The JSON model (XGBoost 2.0's schema) of a legacy binary model; UserError naming the file
    when it is damaged or holds a booster other than trees."""
    reader = _Reader(data, name)
    if data[:4] == b"binf":
        reader.take(4)
    learner = _LEARNER_PARAM.unpack(reader.take(_LEARNER_PARAM_BYTES)[: _LEARNER_PARAM.size])
    base_score, num_feature, num_class, extra_attributes, _, major, minor, num_target, boost_from_average = learner
    objective = reader.string()
    booster = reader.string()
    if booster not in ("gbtree", "dart"):
        raise UserError(f"{name}: a legacy binary {booster} model; smalgo converts tree boosters (gbtree, dart) only.")
    num_trees, num_parallel_tree, _, _, _, _, size_leaf_vector = _GBTREE_PARAM.unpack(
        reader.take(_GBTREE_PARAM_BYTES)[: _GBTREE_PARAM.size]
    )
    if not 0 <= num_trees < 10_000_000:
        raise UserError(f"{name}: not an XGBoost model ({num_trees} trees).")
    trees = []
    for tree_id in range(num_trees):
        _, num_nodes, num_deleted, _, tree_features, tree_leaf_vector = _TREE_PARAM.unpack(
            reader.take(_TREE_PARAM_BYTES)[: _TREE_PARAM.size]
        )
        if not 0 < num_nodes < 1 << 28:
            raise UserError(f"{name}: not an XGBoost model (tree {tree_id} has {num_nodes} nodes).")
        nodes = reader.array(_NODE, num_nodes)
        stats = reader.array(_STAT, num_nodes)
        trees.append(
            {
                "base_weights": stats["base_weight"].tolist(),
                "categories": [],
                "categories_nodes": [],
                "categories_segments": [],
                "categories_sizes": [],
                "default_left": [int(v >> 31) for v in nodes["sindex"].tolist()],
                "id": tree_id,
                "left_children": nodes["left"].tolist(),
                "loss_changes": stats["loss_chg"].tolist(),
                "parents": [v & _LOW_31 for v in nodes["parent"].astype(np.int64).tolist()],
                "right_children": nodes["right"].tolist(),
                "split_conditions": nodes["value"].tolist(),
                "split_indices": [v & _LOW_31 for v in nodes["sindex"].tolist()],
                "split_type": [0] * num_nodes,
                "sum_hessian": stats["sum_hess"].tolist(),
                "tree_param": {
                    "num_deleted": str(num_deleted),
                    "num_feature": str(tree_features),
                    "num_nodes": str(num_nodes),
                    "size_leaf_vector": str(tree_leaf_vector),
                },
            }
        )
    tree_info = reader.array(np.dtype("<i4"), num_trees).tolist()
    attributes = {}
    if extra_attributes:
        (count,) = struct.unpack("<Q", reader.take(8))
        for _ in range(min(count, 10_000)):
            key = reader.string()
            attributes[key] = reader.string()
    objective_section: dict = {"name": objective}
    if objective.startswith("multi:"):
        objective_section["softmax_multiclass_param"] = {"num_class": str(num_class)}
    elif objective.startswith(("reg:", "binary:")):
        objective_section["reg_loss_param"] = {"scale_pos_weight": "1"}
    document = {
        "learner": {
            "attributes": attributes,
            "feature_names": [],
            "feature_types": [],
            "gradient_booster": {
                "model": {
                    "gbtree_model_param": {
                        "num_parallel_tree": str(max(num_parallel_tree, 1)),
                        "num_trees": str(num_trees),
                        "size_leaf_vector": str(size_leaf_vector),
                    },
                    "tree_info": tree_info,
                    "trees": trees,
                },
                "name": "gbtree",
            },
            "learner_model_param": {
                "base_score": repr(float(base_score)),
                "boost_from_average": str(boost_from_average if major >= 1 else 0),
                "num_class": str(num_class),
                "num_feature": str(num_feature),
                "num_target": str(max(num_target, 1)),
            },
            "objective": objective_section,
        },
        # The schema written is XGBoost 2.0's (XGBoost 3 warns about, and will stop reading, JSON
        # models older than 1.6); base_score keeps its meaning (tested against XGBoost 3's own trees).
        "version": [2, 0, 0],
    }
    return json.dumps(document).encode()
