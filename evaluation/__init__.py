"""`learnkb eval`: labelled questions driven through a served learnkb instance, measured."""
