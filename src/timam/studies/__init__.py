"""Studies that train and score many runs side by side: the ablation's variants and the families table's rows."""
