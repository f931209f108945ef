def main() -> None:
    print("tiankong")
